//! A minimal server-sent-events reader: splits a byte stream into the `data` of each event.

/// Accumulates bytes and yields complete events' data fields.
#[derive(Default)]
pub struct SseParser {
    buffer: Vec<u8>,
}

/// Largest event we hold before giving up on a stream that never ends an event.
const MAX_EVENT_BYTES: usize = 1024 * 1024;

impl SseParser {
    /// Adds `chunk` and returns the data of every event it completed, in order.
    pub fn push(&mut self, chunk: &[u8]) -> Result<Vec<String>, &'static str> {
        self.buffer.extend_from_slice(chunk);
        let mut events = Vec::new();
        while let Some((end, sep)) = find_boundary(&self.buffer) {
            let raw: Vec<u8> = self.buffer.drain(..end + sep).take(end).collect();
            let text = String::from_utf8_lossy(&raw);
            let mut data: Vec<&str> = Vec::new();
            for line in text.lines() {
                if let Some(value) = line.strip_prefix("data:") {
                    data.push(value.strip_prefix(' ').unwrap_or(value));
                }
            }
            if !data.is_empty() {
                events.push(data.join("\n"));
            }
        }
        if self.buffer.len() > MAX_EVENT_BYTES {
            return Err("an event exceeded 1 MiB");
        }
        Ok(events)
    }
}

/// The end of the first event and the length of its blank-line separator.
fn find_boundary(buf: &[u8]) -> Option<(usize, usize)> {
    let lf = buf.windows(2).position(|w| w == b"\n\n").map(|i| (i, 2));
    let crlf = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| (i, 4));
    match (lf, crlf) {
        (Some(a), Some(b)) => Some(if a.0 <= b.0 { a } else { b }),
        (a, b) => a.or(b),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_split_across_chunks_come_out_whole() {
        let mut p = SseParser::default();
        assert!(p.push(b"data: {\"a\"").unwrap().is_empty());
        assert_eq!(p.push(b":1}\n\ndata: [DO").unwrap(), vec!["{\"a\":1}"]);
        assert_eq!(p.push(b"NE]\n\n").unwrap(), vec!["[DONE]"]);
    }

    #[test]
    fn comments_crlf_and_multi_line_data_are_handled() {
        let mut p = SseParser::default();
        let events = p
            .push(b": keep-alive\n\ndata: one\r\n\r\nevent: x\ndata: a\ndata: b\n\n")
            .unwrap();
        assert_eq!(events, vec!["one", "a\nb"]);
    }
}
