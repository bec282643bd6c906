//! "Hello, world" over HTTP/1.1 with keep-alive on gmp: one G per connection, requests
//! parsed with `httparse`.
//!
//! ```text
//! cargo run --release -p gmp --example http_hello -- 127.0.0.1:8080
//! wrk -t2 -c100 -d10s http://127.0.0.1:8080/
//! ```
//!
//! The first argument is the address to listen on (default 127.0.0.1:8080); `GMP_PROCS`
//! sets the P count. Go's twin is `benches/go/servers` (`net/http`).

use gmp::net::TcpListener;

#[path = "conn/http.rs"]
mod conn;

fn main() {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:8080".to_string());
    gmp::run(move || {
        let listener = match TcpListener::bind(&addr) {
            Ok(l) => l,
            Err(e) => {
                eprintln!("http_hello: cannot listen on {addr}: {e}");
                std::process::exit(2);
            }
        };
        println!(
            "http_hello: listening on http://{}/",
            listener.local_addr().unwrap()
        );
        loop {
            match listener.accept() {
                Ok((conn, _)) => {
                    gmp::go(move || conn::serve(conn));
                }
                Err(e) => {
                    eprintln!("http_hello: accept: {e}");
                    gmp::time::sleep(std::time::Duration::from_millis(10));
                }
            }
        }
    });
}
