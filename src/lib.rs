
pub mod console;
