//! Black-box tests of the server: each starts it on 127.0.0.1:0 and talks over real sockets.
//! One test binary with modules, so it links once.

mod agui;
mod auth;
mod contract;
mod events;
#[path = "../support/external.rs"]
mod external;
mod fuzz;
mod helpers;
mod history_window;
mod model_switch;
mod openai;
mod openai_python;
mod openapi;
mod operators;
mod readme;
mod retention;
mod schemathesis;
#[path = "../support/server_process.rs"]
mod server_process;
mod sessions;
mod shutdown;
mod smoke;
mod supervision;
mod transfer;
mod turns;
mod usage;
mod ws;
