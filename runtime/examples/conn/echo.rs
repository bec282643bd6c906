//! One echo connection on gmp. Shared, through `#[path]`, by the `echo` example and the
//! class bench's `--net-server echo` (`benches/src/net.rs`), so the bench measures the
//! server the book shows.

use std::io::{Read, Write};

use gmp::net::TcpStream;

/// Echoes until the peer closes or the connection fails.
pub fn serve(mut conn: TcpStream) {
    let _ = conn.set_nodelay(true);
    let mut buf = [0u8; 4096];
    loop {
        match conn.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                if conn.write_all(&buf[..n]).is_err() {
                    return;
                }
            }
        }
    }
}
