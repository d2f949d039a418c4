//! The delimiter scanner: one `memchr` pass over `<` bytes.
//!
//! Every delimiter contains exactly one `<`, at its first byte, so two occurrences of delimiters
//! can never overlap: the list of occurrences found by checking each `<` is the complete,
//! unambiguous set, and its size is bounded by the number of `<` bytes (linear on any input).

use memchr::memchr_iter;

/// The six delimiters of the MEMENTO format, matched byte-exactly.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum Delim {
    ThinkStart = 0,
    ThinkEnd = 1,
    BlockStart = 2,
    BlockEnd = 3,
    SummaryStart = 4,
    SummaryEnd = 5,
}

impl Delim {
    pub const ALL: [Delim; 6] = [
        Delim::ThinkStart,
        Delim::ThinkEnd,
        Delim::BlockStart,
        Delim::BlockEnd,
        Delim::SummaryStart,
        Delim::SummaryEnd,
    ];

    /// The delimiter's exact text.
    pub const fn text(self) -> &'static str {
        match self {
            Delim::ThinkStart => "<think>",
            Delim::ThinkEnd => "</think>",
            Delim::BlockStart => "<|block_start|>",
            Delim::BlockEnd => "<|block_end|>",
            Delim::SummaryStart => "<|summary_start|>",
            Delim::SummaryEnd => "<|summary_end|>",
        }
    }

    /// Length in bytes.
    #[allow(clippy::len_without_is_empty)]
    pub const fn len(self) -> usize {
        self.text().len()
    }
}

/// One delimiter occurrence at byte offset `start`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Token {
    pub delim: Delim,
    pub start: usize,
}

impl Token {
    #[inline]
    pub fn end(&self) -> usize {
        self.start + self.delim.len()
    }
}

/// Which delimiter (if any) starts at `text[pos]`, where `text[pos] == b'<'`.
#[inline]
fn delim_at(text: &[u8], pos: usize) -> Option<Delim> {
    let rest = &text[pos + 1..];
    match rest.first()? {
        b'|' => {
            let r = &rest[1..];
            if r.starts_with(b"block_start|>") {
                Some(Delim::BlockStart)
            } else if r.starts_with(b"block_end|>") {
                Some(Delim::BlockEnd)
            } else if r.starts_with(b"summary_start|>") {
                Some(Delim::SummaryStart)
            } else if r.starts_with(b"summary_end|>") {
                Some(Delim::SummaryEnd)
            } else {
                None
            }
        }
        b't' => rest.starts_with(b"think>").then_some(Delim::ThinkStart),
        b'/' => rest.starts_with(b"/think>").then_some(Delim::ThinkEnd),
        _ => None,
    }
}

/// Append every delimiter occurrence of `text`, in order, to `out` (which is cleared first).
pub fn scan_into(text: &[u8], out: &mut Vec<Token>) {
    out.clear();
    for pos in memchr_iter(b'<', text) {
        if let Some(delim) = delim_at(text, pos) {
            out.push(Token { delim, start: pos });
        }
    }
}

/// Every delimiter occurrence of `text`, in order.
pub fn scan(text: &[u8]) -> Vec<Token> {
    let mut out = Vec::new();
    scan_into(text, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_all_six() {
        let s = "<think>a<|block_start|>b<|block_end|><|summary_start|>c<|summary_end|></think>d";
        let kinds: Vec<Delim> = scan(s.as_bytes()).iter().map(|t| t.delim).collect();
        assert_eq!(
            kinds,
            vec![
                Delim::ThinkStart,
                Delim::BlockStart,
                Delim::BlockEnd,
                Delim::SummaryStart,
                Delim::SummaryEnd,
                Delim::ThinkEnd
            ]
        );
    }

    #[test]
    fn prefixes_are_not_delimiters() {
        for s in ["<|block_", "<thi", "<|summary", "</think", "<|block_end|", "<<<", "<|", "<"] {
            assert!(scan(s.as_bytes()).is_empty(), "{s}");
        }
    }

    #[test]
    fn adjacent_and_after_lt_runs() {
        let s = "<<<<|block_end|><<think></think>";
        let t = scan(s.as_bytes());
        assert_eq!(t.len(), 3);
        assert_eq!(t[0].start, 3);
        assert_eq!(t[1].delim, Delim::ThinkStart);
    }
}
