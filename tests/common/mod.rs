pub mod vcd_crate;
