//! An independent toggle counter built on the `vcd` crate (not our parser): the reference
//! our engine is checked against, and the baseline of the VCD benchmark.

use std::collections::{BTreeMap, HashMap};
use std::io::BufRead;

use vcd::{Command, IdCode, ScopeItem, Value};

/// path -> (width, toggles, x_transitions); real vars left out.
pub fn vcd_crate_toggles(
    reader: impl BufRead,
) -> Result<BTreeMap<String, (u32, u64, u64)>, String> {
    let mut p = vcd::Parser::new(reader);
    let header = p.parse_header().map_err(|e| e.to_string())?;
    let mut vars: Vec<(String, IdCode, u32)> = Vec::new();
    let mut reals = std::collections::HashSet::new();
    fn walk(
        items: &[ScopeItem],
        prefix: &str,
        vars: &mut Vec<(String, IdCode, u32)>,
        reals: &mut std::collections::HashSet<IdCode>,
    ) {
        for it in items {
            match it {
                ScopeItem::Scope(s) => {
                    walk(&s.items, &format!("{prefix}{}.", s.identifier), vars, reals)
                }
                ScopeItem::Var(v) => {
                    if v.var_type == vcd::VarType::Real {
                        reals.insert(v.code);
                    } else {
                        let name = v.reference.split('[').next().unwrap_or(&v.reference);
                        vars.push((format!("{prefix}{name}"), v.code, v.size));
                    }
                }
                _ => {}
            }
        }
    }
    walk(&header.items, "", &mut vars, &mut reals);
    // Per id code: current bit values (LSB first, None = not yet set), toggles, x transitions.
    let mut state: HashMap<IdCode, (Vec<Option<Value>>, u64, u64)> = HashMap::new();
    for (_, code, w) in &vars {
        state
            .entry(*code)
            .or_insert_with(|| (vec![None; *w as usize], 0, 0));
    }
    let apply = |st: &mut (Vec<Option<Value>>, u64, u64), msb_first: &[Value]| {
        let w = st.0.len();
        let pad = match msb_first[0] {
            Value::V1 => Value::V0,
            v => v,
        };
        for i in 0..w {
            let nb = if i < msb_first.len() {
                msb_first[msb_first.len() - 1 - i]
            } else {
                pad
            };
            match st.0[i] {
                None => {}
                Some(ob) if ob == nb => {}
                Some(ob) => {
                    let binary = |v: Value| matches!(v, Value::V0 | Value::V1);
                    if binary(ob) && binary(nb) {
                        st.1 += 1
                    } else {
                        st.2 += 1
                    }
                }
            }
            st.0[i] = Some(nb);
        }
    };
    for cmd in p {
        match cmd.map_err(|e| e.to_string())? {
            Command::ChangeScalar(id, v) => {
                if let Some(st) = state.get_mut(&id) {
                    apply(st, &[v]);
                }
            }
            Command::ChangeVector(id, v) => {
                if let Some(st) = state.get_mut(&id) {
                    let bits: Vec<Value> = v.iter().collect();
                    apply(st, &bits);
                }
            }
            _ => {}
        }
    }
    Ok(vars
        .into_iter()
        .map(|(path, code, w)| {
            let st = &state[&code];
            (path, (w, st.1, st.2))
        })
        .collect())
}
