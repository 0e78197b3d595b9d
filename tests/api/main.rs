//! Black-box tests of the server: each starts it on 127.0.0.1:0 and talks over real sockets.
//! One test binary with modules, so it links once.

mod helpers;
mod smoke;
mod ws;
