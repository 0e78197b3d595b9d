
pub mod providers;
