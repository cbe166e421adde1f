//! Empty: the measurements are in benches/record.rs.
