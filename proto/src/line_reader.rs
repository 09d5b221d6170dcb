//! NDJSON line framing: split input into `\n`-terminated lines, enforcing
//! the frame limit while scanning.
//!
//! Each input byte is scanned once (memchr); a partial line is buffered and
//! never grows past the limit; complete lines inside one input are returned
//! borrowed from it, with no copy.

use crate::error::ProtocolError;

/// One complete line (without its `\n`).
#[derive(Debug, PartialEq, Eq)]
#[cfg_attr(not(feature = "testing"), allow(unreachable_pub))]
pub enum Line<'a> {
    /// The whole line lay in the input slice.
    Input(&'a [u8]),
    /// The line was assembled in the reader's buffer; read it with
    /// [`LineReader::buffered`], then call [`LineReader::consume_buffered`].
    Buffered,
}

/// Splits a byte stream into lines.
#[derive(Debug, Default)]
#[cfg_attr(not(feature = "testing"), allow(unreachable_pub))]
pub struct LineReader {
    buf: Vec<u8>,
    /// A line is complete in `buf` and awaits `consume_buffered`.
    ready: bool,
}

#[cfg_attr(not(feature = "testing"), allow(unreachable_pub))]
impl LineReader {
    /// An empty reader.
    pub fn new() -> Self {
        Self::default()
    }

    /// Takes the next complete line from `input` (advancing it), or buffers
    /// the partial tail and returns `None` once `input` is used up.
    ///
    /// Fails with [`ProtocolError::FrameTooLarge`] as soon as a line is known
    /// to exceed `limit` bytes; the buffer then holds at most `limit` bytes.
    pub fn next<'a>(
        &mut self,
        input: &mut &'a [u8],
        limit: usize,
    ) -> Result<Option<Line<'a>>, ProtocolError> {
        debug_assert!(!self.ready, "consume_buffered not called");
        if input.is_empty() {
            return Ok(None);
        }
        let data: &'a [u8] = input;
        match memchr::memchr(b'\n', data) {
            Some(i) => {
                let (line, rest) = data.split_at(i);
                *input = rest.get(1..).unwrap_or_default();
                if self.buf.len() + line.len() > limit {
                    return Err(ProtocolError::FrameTooLarge { limit });
                }
                if self.buf.is_empty() {
                    Ok(Some(Line::Input(line)))
                } else {
                    self.append(line, limit);
                    self.ready = true;
                    Ok(Some(Line::Buffered))
                }
            }
            None => {
                *input = &[];
                if self.buf.len() + data.len() > limit {
                    return Err(ProtocolError::FrameTooLarge { limit });
                }
                self.append(data, limit);
                Ok(None)
            }
        }
    }

    /// Appends `data` (already checked against `limit`), growing the buffer
    /// geometrically but never past `limit` bytes of capacity: a partial
    /// max-size line costs `limit` bytes, not the doubling's up to twice that.
    fn append(&mut self, data: &[u8], limit: usize) {
        let need = self.buf.len() + data.len();
        if need > self.buf.capacity() {
            // `need <= limit` (checked by the caller), so `target >= need`.
            let target = need.max(self.buf.capacity().saturating_mul(2)).min(limit);
            self.buf.reserve_exact(target - self.buf.len());
        }
        self.buf.extend_from_slice(data);
    }

    /// The assembled line after [`Line::Buffered`] (the connection takes it
    /// with [`Self::take_buffered`] instead).
    #[cfg(any(test, feature = "testing"))]
    pub fn buffered(&self) -> &[u8] {
        &self.buf
    }

    /// Takes the assembled line out (to process it while the reader is
    /// borrowed elsewhere); give the allocation back with [`Self::restore`].
    pub fn take_buffered(&mut self) -> Vec<u8> {
        self.ready = false;
        std::mem::take(&mut self.buf)
    }

    /// Returns a buffer taken with [`Self::take_buffered`], cleared, so its
    /// allocation is reused.
    pub fn restore(&mut self, mut buf: Vec<u8>) {
        if self.buf.is_empty() {
            buf.clear();
            self.buf = buf;
        }
    }

    /// Drops the assembled line.
    #[cfg(any(test, feature = "testing"))]
    pub fn consume_buffered(&mut self) {
        self.ready = false;
        self.buf.clear();
    }

    /// Bytes of a partial line held.
    pub fn pending(&self) -> usize {
        self.buf.len()
    }

    /// Releases the buffer's memory if it grew large (after a big frame).
    pub fn shrink(&mut self, keep: usize) {
        if self.buf.capacity() > keep && self.buf.len() <= keep {
            self.buf.shrink_to(keep);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(
        r: &mut LineReader,
        mut input: &[u8],
        limit: usize,
    ) -> Result<Vec<Vec<u8>>, ProtocolError> {
        let mut out = Vec::new();
        while let Some(l) = r.next(&mut input, limit)? {
            match l {
                Line::Input(l) => out.push(l.to_vec()),
                Line::Buffered => {
                    out.push(r.buffered().to_vec());
                    r.consume_buffered();
                }
            }
        }
        Ok(out)
    }

    #[test]
    fn splits_and_joins() {
        let mut r = LineReader::new();
        assert_eq!(lines(&mut r, b"ab\ncd", 10).unwrap(), vec![b"ab".to_vec()]);
        assert_eq!(r.pending(), 2);
        assert_eq!(
            lines(&mut r, b"e\n\nf\n", 10).unwrap(),
            vec![b"cde".to_vec(), vec![], b"f".to_vec()]
        );
        assert_eq!(r.pending(), 0);
    }

    #[test]
    fn limit_is_exact() {
        let mut r = LineReader::new();
        assert_eq!(lines(&mut r, b"12345\n", 5).unwrap().len(), 1);
        assert_eq!(
            lines(&mut r, b"123456\n", 5),
            Err(ProtocolError::FrameTooLarge { limit: 5 })
        );
        let mut r = LineReader::new();
        assert!(lines(&mut r, b"123", 5).is_ok());
        assert_eq!(
            lines(&mut r, b"456", 5),
            Err(ProtocolError::FrameTooLarge { limit: 5 })
        );
        assert!(r.pending() <= 5);
    }

    #[test]
    fn buffer_capacity_never_exceeds_the_limit() {
        // A max-size line arriving in uneven chunks (as TLS records deliver
        // it) must not leave the doubling's up to 2 x limit of capacity.
        let limit = 100_000;
        let mut r = LineReader::new();
        let mut fed = 0;
        let mut step = 1;
        while fed < limit {
            let n = step.min(limit - fed);
            assert_eq!(lines(&mut r, &vec![b'x'; n], limit).unwrap().len(), 0);
            fed += n;
            step = step * 3 + 7;
            assert!(r.buf.capacity() <= limit, "{} > {limit}", r.buf.capacity());
        }
        assert_eq!(r.pending(), limit);
        let got = lines(&mut r, b"\n", limit).unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].len(), limit);
    }
}
