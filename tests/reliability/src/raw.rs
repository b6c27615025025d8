//! Raw HTTP/1.x over a plain socket, for requests no HTTP client library would send: bytes
//! that are not UTF-8 in a header, HTTP/1.0, pipelines, requests cut in the middle.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

#[derive(Clone, Debug)]
pub struct RawResponse {
    pub status: u16,
    pub headers: Vec<(String, Vec<u8>)>,
    pub body: Vec<u8>,
}

impl RawResponse {
    /// The first header called `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|(header, _)| header.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_slice())
    }

    pub fn body_text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// What came back on one connection.
#[derive(Debug)]
pub struct Exchange {
    pub responses: Vec<RawResponse>,
    /// The server closed the connection (EOF or reset) before we stopped reading.
    pub closed: bool,
}

/// Opens a connection, writes `request` as it is, and reads until `expected` responses have
/// arrived, the server closes, or `timeout` passes. A server that stops reading part-way (and
/// answers 4xx) is fine: write errors are ignored and the answer is still read.
pub fn exchange(addr: SocketAddr, request: &[u8], expected: usize, timeout: Duration) -> Result<Exchange> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
        .with_context(|| format!("connecting to {addr}"))?;
    stream.set_write_timeout(Some(timeout))?;
    stream.set_read_timeout(Some(Duration::from_millis(100)))?;
    let _ = stream.write_all(request);
    read_responses(&mut stream, expected, timeout)
}

/// `GET path` on a connection of its own, with `user_agent`; the answer, within `timeout`.
pub fn get(addr: SocketAddr, path: &str, user_agent: &str, timeout: Duration) -> Result<RawResponse> {
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: frontend\r\nUser-Agent: {user_agent}\r\nConnection: close\r\n\r\n"
    );
    exchange(addr, request.as_bytes(), 1, timeout)?
        .responses
        .into_iter()
        .next()
        .with_context(|| format!("no answer to GET {path} within {timeout:?}"))
}

/// Reads up to `expected` responses from `stream` within `timeout`.
pub fn read_responses(stream: &mut TcpStream, expected: usize, timeout: Duration) -> Result<Exchange> {
    let deadline = Instant::now() + timeout;
    let mut buffer = Vec::new();
    let mut responses = Vec::new();
    let mut closed = false;
    let mut chunk = [0_u8; 16 * 1024];
    // Bounded by the deadline: each read waits at most 100 ms.
    while responses.len() < expected && Instant::now() < deadline {
        while let Some((response, used)) = parse_one(&buffer, false)? {
            responses.push(response);
            buffer.drain(..used);
        }
        if responses.len() >= expected {
            break;
        }
        match stream.read(&mut chunk) {
            Ok(0) => {
                closed = true;
                break;
            }
            Ok(read) => buffer.extend_from_slice(&chunk[..read]),
            Err(error) if matches!(error.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(error) if matches!(error.kind(), ErrorKind::ConnectionReset | ErrorKind::BrokenPipe) => {
                closed = true;
                break;
            }
            Err(error) => return Err(error).context("reading the answer"),
        }
    }
    if closed {
        // A body delimited by the end of the connection is complete now.
        while let Some((response, used)) = parse_one(&buffer, true)? {
            responses.push(response);
            buffer.drain(..used);
        }
    }
    Ok(Exchange { responses, closed })
}

/// One complete response at the start of `buffer` and how many bytes it took, if there is one.
fn parse_one(buffer: &[u8], at_eof: bool) -> Result<Option<(RawResponse, usize)>> {
    if buffer.is_empty() {
        return Ok(None);
    }
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut response = httparse::Response::new(&mut headers);
    let head = match response.parse(buffer) {
        Ok(httparse::Status::Complete(head)) => head,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(error) => bail!(
            "the server sent something that is not an HTTP response ({error}): {:?}",
            String::from_utf8_lossy(&buffer[..buffer.len().min(200)])
        ),
    };
    let status = response.code.unwrap_or_default();
    let headers: Vec<(String, Vec<u8>)> = response
        .headers
        .iter()
        .map(|header| (header.name.to_owned(), header.value.to_vec()))
        .collect();
    let content_length = headers
        .iter()
        .find(|(name, _)| name.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, value)| std::str::from_utf8(value).ok()?.trim().parse::<usize>().ok());
    let chunked = headers.iter().any(|(name, value)| {
        name.eq_ignore_ascii_case("transfer-encoding") && String::from_utf8_lossy(value).contains("chunked")
    });
    let (body, used) = if chunked {
        match dechunk(&buffer[head..]) {
            Some((body, used)) => (body, head + used),
            None => return Ok(None),
        }
    } else if let Some(length) = content_length {
        if buffer.len() < head + length {
            return Ok(None);
        }
        (buffer[head..head + length].to_vec(), head + length)
    } else if status == 204 || status == 304 || (100..200).contains(&status) {
        (Vec::new(), head)
    } else if at_eof {
        (buffer[head..].to_vec(), buffer.len())
    } else {
        return Ok(None);
    };
    Ok(Some((
        RawResponse {
            status,
            headers,
            body,
        },
        used,
    )))
}

/// A chunked body: its bytes and how much of `data` it took, once complete.
fn dechunk(data: &[u8]) -> Option<(Vec<u8>, usize)> {
    let mut body = Vec::new();
    let mut at = 0;
    loop {
        let line_end = data[at..].windows(2).position(|pair| pair == b"\r\n")? + at;
        let size_text = std::str::from_utf8(&data[at..line_end]).ok()?;
        let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
        at = line_end + 2;
        if size == 0 {
            // Assume no trailers: the terminating CRLF follows.
            return (data.len() >= at + 2).then(|| (body, at + 2));
        }
        if data.len() < at + size + 2 {
            return None;
        }
        body.extend_from_slice(&data[at..at + size]);
        at += size + 2;
    }
}
