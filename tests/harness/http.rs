//! A tiny HTTP/1.1 server on loopback for the base-download tests: it serves files from a
//! table, counts requests per path, and can misbehave on purpose (truncated bodies).

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};

#[derive(Clone)]
pub enum Reply {
    /// 200 with this body.
    Body(Vec<u8>),
    /// 200 announcing the full length but sending only the first half, then closing.
    Truncated(Vec<u8>),
    /// A redirect to this location.
    Redirect(String),
}

#[derive(Default)]
struct State {
    files: HashMap<String, Reply>,
    hits: HashMap<String, usize>,
}

/// Serves until dropped (the listener thread ends with the process; tests use one server each).
pub struct Server {
    state: Arc<Mutex<State>>,
    pub port: u16,
}

impl Server {
    pub fn start(port: u16) -> Server {
        let listener = TcpListener::bind(("127.0.0.1", port))
            .unwrap_or_else(|e| panic!("cannot listen on 127.0.0.1:{port}: {e}"));
        let state = Arc::new(Mutex::new(State::default()));
        let shared = state.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let state = shared.clone();
                std::thread::spawn(move || serve(stream, &state));
            }
        });
        Server { state, port }
    }

    pub fn set(&self, path: &str, reply: Reply) {
        self.state
            .lock()
            .unwrap()
            .files
            .insert(path.to_owned(), reply);
    }

    pub fn hits(&self, path: &str) -> usize {
        *self.state.lock().unwrap().hits.get(path).unwrap_or(&0)
    }
}

fn serve(stream: TcpStream, state: &Mutex<State>) {
    let mut reader = BufReader::new(stream.try_clone().expect("clone stream"));
    let mut stream = stream;
    loop {
        let mut request_line = String::new();
        if reader.read_line(&mut request_line).unwrap_or(0) == 0 {
            return;
        }
        // Skip headers; conditional requests are answered in full (the client must then
        // compare checksums itself).
        loop {
            let mut h = String::new();
            if reader.read_line(&mut h).unwrap_or(0) == 0 || h == "\r\n" || h == "\n" {
                break;
            }
        }
        let mut words = request_line.split_whitespace();
        let method = words.next().unwrap_or("");
        let path = words.next().unwrap_or("").to_owned();
        let reply = {
            let mut s = state.lock().unwrap();
            *s.hits.entry(path.clone()).or_default() += 1;
            s.files.get(&path).cloned()
        };
        let head = method == "HEAD";
        let ok = match reply {
            None => write!(
                stream,
                "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n"
            )
            .is_ok(),
            Some(Reply::Redirect(to)) => write!(
                stream,
                "HTTP/1.1 302 Found\r\nLocation: {to}\r\nContent-Length: 0\r\n\r\n"
            )
            .is_ok(),
            Some(Reply::Body(body)) => {
                write!(
                    stream,
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n",
                    body.len()
                )
                .is_ok()
                    && (head || stream.write_all(&body).is_ok())
            }
            Some(Reply::Truncated(body)) => {
                let _ = write!(
                    stream,
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n",
                    body.len()
                );
                let _ = stream.write_all(&body[..body.len() / 2]);
                return;
            }
        };
        if !ok {
            return;
        }
    }
}
