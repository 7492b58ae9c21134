pub fn _x() {}
pub mod wire;
