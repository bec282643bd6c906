//! `cargo workbook serve [--port N]`: the book on `http://127.0.0.1:N`, rebuilt on save.
//!
//! What lives here: a small static file server on std's `TcpListener` (GET and HEAD, one
//! thread per connection, `Connection: close`), and the loop that polls `book/src` and
//! `book.toml` every 500 ms and rebuilds the book after a quiet moment. It listens on
//! 127.0.0.1 only: the book is for the person at this machine.
//!
//! Each HTML page gets a few lines of script that ask `/__workbook/version` once a second
//! and reload the page when a rebuild has happened, so a save in the editor shows up in the
//! browser by itself.
//!
//! Paths containing `..` are refused; anything else is looked up under the build folder
//! (`target/book`), `dir/` means `dir/index.html`, a missing file is mdBook's `404.html`.

use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use crate::poll::Watcher;
use crate::{Error, Result, book, rel};

/// The URL path the reload script polls.
pub const VERSION_PATH: &str = "/__workbook/version";

const RELOAD_SCRIPT: &str = "<script>(function(){var v=null;setInterval(function(){\
fetch('/__workbook/version',{cache:'no-store'}).then(function(r){return r.text()})\
.then(function(t){if(v!==null&&t!==v){location.reload()}v=t}).catch(function(){})},1000)})();\
</script>";

/// A bound server: files under `dir`, and a build counter the reload script watches.
#[derive(Debug)]
pub struct Server {
    listener: TcpListener,
    dir: PathBuf,
    version: Arc<AtomicU64>,
}

impl Server {
    /// Binds 127.0.0.1:`port` (0 picks a free port) to serve `dir`.
    pub fn bind(dir: &Path, port: u16) -> Result<Server> {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, port)).map_err(|e| {
            let hint = if e.kind() == std::io::ErrorKind::AddrInUse {
                format!(
                    " (another program uses it: pick another, e.g. `cargo workbook serve --port {}`)",
                    port.wrapping_add(1).max(1024)
                )
            } else {
                String::new()
            };
            Error::new(format!("cannot listen on 127.0.0.1:{port}: {e}{hint}"))
        })?;
        Ok(Server {
            listener,
            dir: dir.to_path_buf(),
            version: Arc::new(AtomicU64::new(1)),
        })
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound listener has an address")
    }

    /// The counter the reload script polls: bump it after a rebuild.
    pub fn version(&self) -> Arc<AtomicU64> {
        self.version.clone()
    }

    /// Answers requests until the process ends, one thread per connection.
    pub fn serve_forever(self) {
        let dir = Arc::new(self.dir);
        for stream in self.listener.incoming() {
            let Ok(stream) = stream else { continue };
            let dir = dir.clone();
            let version = self.version.clone();
            thread::spawn(move || {
                // A browser that goes away mid-answer is not our problem.
                let _ = handle(stream, &dir, &version);
            });
        }
    }
}

/// The content type for a file, by extension.
pub fn content_type(path: &Path) -> &'static str {
    match path.extension().and_then(|e| e.to_str()).unwrap_or("") {
        "html" | "htm" => "text/html; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "json" => "application/json",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "gif" => "image/gif",
        "ico" => "image/x-icon",
        "woff2" => "font/woff2",
        "woff" => "font/woff",
        "ttf" => "font/ttf",
        "otf" => "font/otf",
        "txt" | "md" | "rs" | "toml" => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    }
}

/// Why a URL path does not map to a file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refused {
    /// It tries to leave the served folder (`..`) or is not valid.
    Forbidden,
    /// There is no such file.
    NotFound,
}

/// The file under `dir` that the URL path `url` names (query and fragment ignored,
/// percent-escapes decoded, a folder means its index.html).
pub fn resolve(dir: &Path, url: &str) -> std::result::Result<PathBuf, Refused> {
    let path = url.split(['?', '#']).next().unwrap_or("");
    let decoded = percent_decode(path).ok_or(Refused::Forbidden)?;
    if decoded.contains("..") || decoded.contains('\\') || decoded.contains('\0') {
        return Err(Refused::Forbidden);
    }
    let mut file = dir.to_path_buf();
    for segment in decoded.split('/').filter(|s| !s.is_empty() && *s != ".") {
        file.push(segment);
    }
    if file.is_dir() {
        file.push("index.html");
    }
    if file.is_file() {
        Ok(file)
    } else {
        Err(Refused::NotFound)
    }
}

fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = text.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

fn handle(stream: TcpStream, dir: &Path, version: &AtomicU64) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    // Skip the headers: nothing in them changes the answer.
    let mut header = String::new();
    while reader.read_line(&mut header)? > 0 && header.trim() != "" {
        header.clear();
    }
    let mut words = request_line.split_whitespace();
    let (method, url) = (words.next().unwrap_or(""), words.next().unwrap_or("/"));
    let mut out = stream;
    if method != "GET" && method != "HEAD" {
        return respond(
            &mut out,
            "405 Method Not Allowed",
            "text/plain",
            b"GET only\n",
            true,
        );
    }
    let head_only = method == "HEAD";
    if url.split('?').next() == Some(VERSION_PATH) {
        let body = version.load(Ordering::SeqCst).to_string();
        return respond(
            &mut out,
            "200 OK",
            "text/plain",
            body.as_bytes(),
            !head_only,
        );
    }
    let (status, file) = match resolve(dir, url) {
        Ok(file) => ("200 OK", file),
        Err(Refused::Forbidden) => {
            return respond(
                &mut out,
                "403 Forbidden",
                "text/plain",
                b"403: paths with `..` are not served\n",
                !head_only,
            );
        }
        Err(Refused::NotFound) if dir.join("404.html").is_file() => {
            ("404 Not Found", dir.join("404.html"))
        }
        Err(Refused::NotFound) => {
            let body =
                format!("404: no {url} in the built book (is it built? `cargo workbook book`)\n");
            return respond(
                &mut out,
                "404 Not Found",
                "text/plain",
                body.as_bytes(),
                !head_only,
            );
        }
    };
    let mut body = fs::read(&file)?;
    let kind = content_type(&file);
    if kind.starts_with("text/html") {
        body = inject_reload(body);
    }
    respond(&mut out, status, kind, &body, !head_only)
}

/// Adds the reload script before `</body>` (or at the end).
fn inject_reload(html: Vec<u8>) -> Vec<u8> {
    let text = String::from_utf8_lossy(&html);
    match text.rfind("</body>") {
        Some(at) => format!("{}{RELOAD_SCRIPT}{}", &text[..at], &text[at..]).into_bytes(),
        None => format!("{text}{RELOAD_SCRIPT}").into_bytes(),
    }
}

fn respond(
    out: &mut TcpStream,
    status: &str,
    kind: &str,
    body: &[u8],
    with_body: bool,
) -> std::io::Result<()> {
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\n\
         Cache-Control: no-cache\r\nConnection: close\r\n\r\n",
        body.len()
    );
    out.write_all(head.as_bytes())?;
    if with_body {
        out.write_all(body)?;
    }
    out.flush()
}

/// The `serve` command: build, serve, rebuild on every change until Ctrl-C.
pub fn run(root: &Path, port: u16) -> Result<()> {
    let started = Instant::now();
    eprintln!("building the book from book/src ...");
    let index = book::build(root)?;
    let dir = index
        .parent()
        .expect("index.html is in a folder")
        .to_path_buf();
    let server = Server::bind(&dir, port)?;
    let addr = server.local_addr();
    println!(
        "book built in {:.1} s; serving {} at http://{addr}/",
        started.elapsed().as_secs_f64(),
        rel(root, &dir)
    );
    println!(
        "rebuilding on every change to book/src, book/css, book/figures.toml or book.toml; Ctrl-C stops"
    );
    let version = server.version();
    thread::spawn(move || server.serve_forever());
    let mut watcher = Watcher::new(
        vec![
            root.join("book/src"),
            root.join("book/css"),
            root.join("book/figures.toml"),
            root.join("book.toml"),
        ],
        Duration::from_millis(500),
        Duration::from_millis(300),
    );
    loop {
        let changed = watcher.wait(|_| {});
        let names: Vec<String> = changed.iter().take(3).map(|p| rel(root, p)).collect();
        let more = changed.len().saturating_sub(names.len());
        let what = if more > 0 {
            format!("{} and {more} more", names.join(", "))
        } else {
            names.join(", ")
        };
        let started = Instant::now();
        match book::build(root) {
            Ok(_) => {
                version.fetch_add(1, Ordering::SeqCst);
                println!(
                    "rebuilt in {:.1} s ({what} changed)",
                    started.elapsed().as_secs_f64()
                );
            }
            Err(e) => {
                println!("rebuild failed ({what} changed): {e}; still serving the last good build")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn get(addr: SocketAddr, path: &str) -> String {
        let mut stream = TcpStream::connect(addr).unwrap();
        write!(stream, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).unwrap();
        answer
    }

    #[test]
    fn serves_files_with_types_and_refuses_dot_dot() {
        let dir = tempfile::tempdir().unwrap();
        let book = dir.path().join("book");
        fs::create_dir_all(book.join("css")).unwrap();
        fs::write(book.join("index.html"), "<html><body>hi</body></html>").unwrap();
        fs::write(book.join("css/a b.css"), "body{}").unwrap();
        fs::write(book.join("404.html"), "<p>lost</p>").unwrap();
        fs::write(dir.path().join("secret.txt"), "no").unwrap();
        let server = Server::bind(&book, 0).unwrap();
        let addr = server.local_addr();
        thread::spawn(move || server.serve_forever());
        testkit::watchdog(
            "requests to the book server",
            testkit::DEFAULT_LIMIT,
            move || {
                let index = get(addr, "/");
                assert!(index.starts_with("HTTP/1.1 200 OK"), "{index}");
                assert!(index.contains("Content-Type: text/html"), "{index}");
                assert!(
                    index.contains(VERSION_PATH),
                    "the reload script is injected: {index}"
                );
                let css = get(addr, "/css/a%20b.css?v=1");
                assert!(
                    css.contains("Content-Type: text/css") && css.ends_with("body{}"),
                    "{css}"
                );
                assert!(get(addr, "/../secret.txt").starts_with("HTTP/1.1 403"));
                assert!(get(addr, "/css/%2e%2e/%2e%2e/secret.txt").starts_with("HTTP/1.1 403"));
                let missing = get(addr, "/nope.html");
                assert!(
                    missing.starts_with("HTTP/1.1 404") && missing.contains("lost"),
                    "{missing}"
                );
                assert!(get(addr, VERSION_PATH).ends_with("\r\n\r\n1"));
            },
        );
    }

    #[test]
    fn content_types() {
        for (name, kind) in [
            ("a.html", "text/html; charset=utf-8"),
            ("a.css", "text/css; charset=utf-8"),
            ("a.js", "text/javascript; charset=utf-8"),
            ("a.svg", "image/svg+xml"),
            ("a.png", "image/png"),
            ("a.woff2", "font/woff2"),
            ("searchindex.json", "application/json"),
            ("a.bin", "application/octet-stream"),
        ] {
            assert_eq!(content_type(Path::new(name)), kind);
        }
    }
}
