//! A TCP echo server on gmp: one G per connection, parked by the netpoller while it waits.
//!
//! ```text
//! cargo run --release -p gmp --example echo -- 127.0.0.1:7000
//! ```
//!
//! The first argument is the address to listen on (default 127.0.0.1:7000); `GMP_PROCS`
//! sets the P count. The class bench points `echo-load` at it (`benches/src/echo.rs`).

use gmp::net::TcpListener;

#[path = "conn/echo.rs"]
mod conn;

fn main() {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:7000".to_string());
    gmp::run(move || {
        let listener = match TcpListener::bind(&addr) {
            Ok(l) => l,
            Err(e) => {
                eprintln!("echo: cannot listen on {addr}: {e}");
                std::process::exit(2);
            }
        };
        println!("echo: listening on {}", listener.local_addr().unwrap());
        loop {
            match listener.accept() {
                Ok((conn, _)) => {
                    gmp::go(move || conn::serve(conn));
                }
                // Out of descriptors, say: the message names `ulimit -n`. Keep serving the
                // connections already open, and try again a little later.
                Err(e) => {
                    eprintln!("echo: accept: {e}");
                    gmp::time::sleep(std::time::Duration::from_millis(10));
                }
            }
        }
    });
}
