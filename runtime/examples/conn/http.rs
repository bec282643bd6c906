//! One HTTP/1.1 "hello" connection on gmp, with keep-alive and pipelining, requests parsed
//! with `httparse`. Shared, through `#[path]`, by the `http_hello` example and the class
//! bench's `--net-server http` (`benches/src/net.rs`), so `wrk` measures the server the
//! book shows.

use std::io::{Read, Write};

use gmp::net::TcpStream;

const BODY: &str = "Hello, world!\n";
/// The largest request head we read; a larger one is answered 431 and closed.
const HEAD_MAX: usize = 16 * 1024;

/// Answers requests on one connection until the client closes it, asks to close, or sends
/// something that is not HTTP/1.x.
pub fn serve(mut conn: TcpStream) {
    let _ = conn.set_nodelay(true);
    let mut buf = vec![0u8; HEAD_MAX];
    let mut filled = 0;
    let response = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n{BODY}",
        BODY.len()
    );
    let mut out = Vec::with_capacity(4096);
    loop {
        // Answer every complete request in the buffer (pipelining), then write once.
        let mut close = false;
        loop {
            let mut headers = [httparse::EMPTY_HEADER; 32];
            let mut req = httparse::Request::new(&mut headers);
            match req.parse(&buf[..filled]) {
                Ok(httparse::Status::Complete(len)) => {
                    close = wants_close(&req);
                    out.extend_from_slice(response.as_bytes());
                    // This server ignores request bodies: a request with one is refused.
                    if has_body(&req) {
                        close = true;
                    }
                    buf.copy_within(len..filled, 0);
                    filled -= len;
                    if close {
                        break;
                    }
                }
                Ok(httparse::Status::Partial) => break,
                Err(_) => {
                    out.extend_from_slice(
                        b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                    );
                    close = true;
                    break;
                }
            }
        }
        if !out.is_empty() {
            if conn.write_all(&out).is_err() {
                return;
            }
            out.clear();
        }
        if close {
            return;
        }
        if filled == buf.len() {
            let _ = conn.write_all(
                b"HTTP/1.1 431 Request Header Fields Too Large\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            );
            return;
        }
        match conn.read(&mut buf[filled..]) {
            Ok(0) | Err(_) => return,
            Ok(n) => filled += n,
        }
    }
}

/// HTTP/1.0 closes unless asked to keep alive; HTTP/1.1 keeps alive unless asked to close.
fn wants_close(req: &httparse::Request<'_, '_>) -> bool {
    let connection = req
        .headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case("connection"))
        .map(|h| String::from_utf8_lossy(h.value).to_ascii_lowercase());
    match req.version {
        Some(1) => connection.is_some_and(|c| c.contains("close")),
        _ => !connection.is_some_and(|c| c.contains("keep-alive")),
    }
}

fn has_body(req: &httparse::Request<'_, '_>) -> bool {
    req.headers.iter().any(|h| {
        (h.name.eq_ignore_ascii_case("content-length") && h.value != b"0")
            || h.name.eq_ignore_ascii_case("transfer-encoding")
    })
}
