//! Per-row parsing: the tutorial-compatible fields, the structural walk (status and lossless
//! spans), all derived from one delimiter scan.

use std::ops::Range;

use crate::scan::{scan_into, Delim, Token};
use crate::status::Status;
use crate::text::{count_chars_words, skip_space, strip_range, TextStats};

/// What a byte range of a row is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum SpanKind {
    /// Text before `<think>`.
    Preamble = 0,
    ThinkStart,
    /// Text inside `<think>` outside any block or memento.
    Between,
    BlockStart,
    /// Block content (between `<|block_start|>` and `<|block_end|>`, unstripped).
    Block,
    BlockEnd,
    SummaryStart,
    /// Memento content (unstripped).
    Summary,
    SummaryEnd,
    ThinkEnd,
    /// Text after `</think>`.
    Answer,
}

impl SpanKind {
    pub const ALL: [SpanKind; 11] = [
        SpanKind::Preamble,
        SpanKind::ThinkStart,
        SpanKind::Between,
        SpanKind::BlockStart,
        SpanKind::Block,
        SpanKind::BlockEnd,
        SpanKind::SummaryStart,
        SpanKind::Summary,
        SpanKind::SummaryEnd,
        SpanKind::ThinkEnd,
        SpanKind::Answer,
    ];

    pub const fn name(self) -> &'static str {
        match self {
            SpanKind::Preamble => "preamble",
            SpanKind::ThinkStart => "think_start",
            SpanKind::Between => "between",
            SpanKind::BlockStart => "block_start",
            SpanKind::Block => "block",
            SpanKind::BlockEnd => "block_end",
            SpanKind::SummaryStart => "summary_start",
            SpanKind::Summary => "summary",
            SpanKind::SummaryEnd => "summary_end",
            SpanKind::ThinkEnd => "think_end",
            SpanKind::Answer => "answer",
        }
    }

    fn of_delim(d: Delim) -> SpanKind {
        match d {
            Delim::ThinkStart => SpanKind::ThinkStart,
            Delim::ThinkEnd => SpanKind::ThinkEnd,
            Delim::BlockStart => SpanKind::BlockStart,
            Delim::BlockEnd => SpanKind::BlockEnd,
            Delim::SummaryStart => SpanKind::SummaryStart,
            Delim::SummaryEnd => SpanKind::SummaryEnd,
        }
    }
}

/// A byte range of a row and what it is. Spans of a row are ordered, contiguous and cover it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Span {
    pub kind: SpanKind,
    pub start: usize,
    pub end: usize,
}

/// Everything the parser derives from one row. Ranges are byte ranges into the row.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Parsed {
    /// Tutorial `blocks`: every non-greedy `<|block_start|>(.*?)<|block_end|>` match, stripped.
    pub blocks: Vec<Range<usize>>,
    /// Tutorial `summaries`: every non-greedy `<|summary_start|>(.*?)<|summary_end|>`, stripped.
    pub summaries: Vec<Range<usize>>,
    /// Tutorial `reasoning`: the first `<think>(.*?)</think>` match, unstripped.
    pub reasoning: Option<Range<usize>>,
    /// Tutorial `final_answer`: after the last `</think>`, stripped; `None` when there is none
    /// (the tutorial's empty string).
    pub final_answer: Option<Range<usize>>,
    /// Code points and words of each stripped block (parallel to `blocks`).
    pub block_items: Vec<TextStats>,
    /// Code points and words of each stripped summary (parallel to `summaries`).
    pub summary_items: Vec<TextStats>,
    /// Code points and words summed over the stripped `blocks`.
    pub block_stats: TextStats,
    /// Code points and words summed over the stripped `summaries`.
    pub summary_stats: TextStats,
    pub status: Status,
    /// Byte offset of the problem behind `status` (`None` when ok).
    pub error_offset: Option<usize>,
    /// Lossless segmentation (filled only when asked for).
    pub spans: Vec<Span>,
}

impl Parsed {
    fn clear(&mut self) {
        self.blocks.clear();
        self.summaries.clear();
        self.block_items.clear();
        self.summary_items.clear();
        self.reasoning = None;
        self.final_answer = None;
        self.block_stats = TextStats::default();
        self.summary_stats = TextStats::default();
        self.status = Status::Ok;
        self.error_offset = None;
        self.spans.clear();
    }
}

/// Parse one row. `tokens` is scratch space reused across rows; `out` is overwritten.
pub fn parse_row(text: &[u8], tokens: &mut Vec<Token>, out: &mut Parsed, want_spans: bool) {
    out.clear();
    scan_into(text, tokens);
    tutorial_fields(text, tokens, out);
    structure(text, tokens, out, want_spans);
}

/// Convenience: parse one row with fresh buffers, spans included.
pub fn parse(text: &str) -> Parsed {
    let mut out = Parsed::default();
    parse_row(text.as_bytes(), &mut Vec::new(), &mut out, true);
    out
}

/// The non-greedy search `open(.*?)close` over the token list: since occurrences never
/// overlap, the regex's leftmost matches are "next open, then next close after it".
pub fn pairs(tokens: &[Token], open: Delim, close: Delim, mut f: impl FnMut(Range<usize>)) {
    let mut from: Option<usize> = None;
    for t in tokens {
        match from {
            None if t.delim == open => from = Some(t.end()),
            Some(s) if t.delim == close => {
                f(s..t.start);
                from = None;
            }
            _ => {}
        }
    }
}

/// The tutorial's stripped items between `open` and `close` (its non-greedy pairing): their
/// ranges, the text measures of each, and the sum of those.
#[inline]
fn stripped_items(
    text: &[u8],
    tokens: &[Token],
    open: Delim,
    close: Delim,
    ranges: &mut Vec<Range<usize>>,
    items: &mut Vec<TextStats>,
    total: &mut TextStats,
) {
    pairs(tokens, open, close, |r| {
        let r = strip_range(text, r);
        let st = count_chars_words(&text[r.clone()]);
        *total += st;
        items.push(st);
        ranges.push(r);
    });
}

fn tutorial_fields(text: &[u8], tokens: &[Token], out: &mut Parsed) {
    let (b, s) = ((Delim::BlockStart, Delim::BlockEnd), (Delim::SummaryStart, Delim::SummaryEnd));
    stripped_items(text, tokens, b.0, b.1, &mut out.blocks, &mut out.block_items, &mut out.block_stats);
    stripped_items(text, tokens, s.0, s.1, &mut out.summaries, &mut out.summary_items, &mut out.summary_stats);
    // The first `<think>(.*?)</think>` match: the first `</think>` after the first `<think>`.
    out.reasoning = tokens.iter().position(|t| t.delim == Delim::ThinkStart).and_then(|i| {
        let from = tokens[i].end();
        tokens[i + 1..].iter().find(|t| t.delim == Delim::ThinkEnd).map(|t| from..t.start)
    });
    out.final_answer =
        tokens.iter().rev().find(|t| t.delim == Delim::ThinkEnd).map(|t| strip_range(text, t.end()..text.len()));
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum State {
    Pre,
    Think,
    Block,
    AfterBlock,
    Summary,
    After,
}

struct Walk<'a> {
    text: &'a [u8],
    problem: Option<(Status, usize)>,
    quoted: Option<usize>,
    spans: Option<&'a mut Vec<Span>>,
}

impl Walk<'_> {
    fn flag(&mut self, status: Status, offset: usize) {
        if self.problem.is_none() {
            self.problem = Some((status, offset));
        }
    }

    fn span(&mut self, kind: SpanKind, start: usize, end: usize) {
        if start == end {
            return;
        }
        if let Some(spans) = self.spans.as_deref_mut() {
            match spans.last_mut() {
                Some(last) if last.kind == kind && last.end == start => last.end = end,
                _ => spans.push(Span { kind, start, end }),
            }
        }
    }

    /// Text between two tokens, seen in `state`.
    fn gap(&mut self, state: State, start: usize, end: usize) {
        let kind = match state {
            State::Pre => SpanKind::Preamble,
            State::Think | State::AfterBlock => SpanKind::Between,
            State::Block => SpanKind::Block,
            State::Summary => SpanKind::Summary,
            State::After => SpanKind::Answer,
        };
        self.span(kind, start, end);
        if matches!(state, State::Pre | State::Think | State::AfterBlock) && self.problem.is_none() {
            // The first non-space byte: where the stripped gap text would start.
            let lo = skip_space(self.text, start..end);
            if lo < end {
                let status = if state == State::Pre { Status::TextBeforeThink } else { Status::TextBetweenUnits };
                self.flag(status, lo);
            }
        }
    }

    /// A delimiter the structure reads as plain content (quoted inside a block or memento).
    fn quoted(&mut self, t: &Token, kind: SpanKind) {
        self.quoted.get_or_insert(t.start);
        self.span(kind, t.start, t.end());
    }
}

fn is_placeholder(s: &[u8]) -> bool {
    if s.len() > 64 {
        return false;
    }
    let lower = s.to_ascii_lowercase();
    memchr::memmem::find(&lower, b"missing summary").is_some()
        || memchr::memmem::find(&lower, b"summarization failed").is_some()
}

fn structure(text: &[u8], tokens: &[Token], out: &mut Parsed, want_spans: bool) {
    let spans = if want_spans { Some(&mut out.spans) } else { None };
    let mut w = Walk { text, problem: None, quoted: None, spans };

    let first_think = tokens.iter().find(|t| t.delim == Delim::ThinkStart);
    match first_think {
        None if skip_space(text, 0..text.len()) == text.len() => w.flag(Status::Empty, 0),
        None => w.flag(Status::NoThink, 0),
        Some(t) if !tokens.iter().any(|t| t.delim == Delim::BlockStart) => w.flag(Status::NoBlocks, t.end()),
        Some(_) => {}
    }

    let mut state = State::Pre;
    let mut pos = 0usize;
    let mut think_at = 0usize; // offset of the open <think>
    let mut unit_at = 0usize; // offset of the open (or last closed) block / open memento
    let mut content_from = 0usize; // first byte of the open unit's content
    let mut depth = 0usize; // nesting of open blocks
    for t in tokens {
        w.gap(state, pos, t.start);
        pos = t.end();
        let own = SpanKind::of_delim(t.delim);
        match (state, t.delim) {
            (State::Pre, Delim::ThinkStart) => {
                think_at = t.start;
                state = State::Think;
            }
            (State::Pre, Delim::ThinkEnd) => w.flag(Status::StrayDelimiter, t.start),
            (State::Pre, _) => w.flag(Status::UnitOutsideThink, t.start),

            (State::Think, Delim::BlockStart) | (State::AfterBlock, Delim::BlockStart) => {
                if state == State::AfterBlock {
                    w.flag(Status::BlockWithoutSummary, unit_at);
                }
                (unit_at, content_from, depth) = (t.start, t.end(), 1);
                state = State::Block;
            }
            (State::Think, Delim::SummaryStart) => {
                w.flag(Status::SummaryWithoutBlock, t.start);
                (unit_at, content_from) = (t.start, t.end());
                state = State::Summary;
            }
            (State::Think, Delim::ThinkEnd) => state = State::After,
            (State::Think, _) => w.flag(Status::StrayDelimiter, t.start),

            (State::Block, Delim::BlockEnd) => {
                depth -= 1;
                if depth == 0 {
                    if skip_space(text, content_from..t.start) == t.start {
                        w.flag(Status::EmptyBlock, unit_at);
                    }
                    state = State::AfterBlock;
                }
            }
            (State::Block, Delim::BlockStart) => {
                w.flag(Status::NestedBlock, t.start);
                depth += 1;
            }
            (State::Block, Delim::ThinkEnd) => {
                w.flag(Status::UnclosedBlock, unit_at);
                state = State::After;
            }
            (State::Block, _) => {
                w.quoted(t, SpanKind::Block);
                continue;
            }

            (State::AfterBlock, Delim::SummaryStart) => {
                (unit_at, content_from) = (t.start, t.end());
                state = State::Summary;
            }
            (State::AfterBlock, Delim::ThinkEnd) => {
                w.flag(Status::BlockWithoutSummary, unit_at);
                state = State::After;
            }
            (State::AfterBlock, _) => w.flag(Status::StrayDelimiter, t.start),

            (State::Summary, Delim::SummaryEnd) => {
                let r = strip_range(text, content_from..t.start);
                if r.is_empty() {
                    w.flag(Status::EmptySummary, unit_at);
                } else if is_placeholder(&text[r.clone()]) {
                    w.flag(Status::PlaceholderSummary, r.start);
                }
                state = State::Think;
            }
            (State::Summary, Delim::SummaryStart) => {
                w.flag(Status::UnclosedSummary, unit_at);
                (unit_at, content_from) = (t.start, t.end());
            }
            (State::Summary, Delim::ThinkEnd) => {
                w.flag(Status::UnclosedSummary, unit_at);
                state = State::After;
            }
            (State::Summary, _) => {
                w.quoted(t, SpanKind::Summary);
                continue;
            }

            (State::After, Delim::ThinkStart | Delim::ThinkEnd) => w.flag(Status::StrayDelimiter, t.start),
            (State::After, _) => w.flag(Status::UnitOutsideThink, t.start),
        }
        w.span(own, t.start, t.end());
    }
    w.gap(state, pos, text.len());
    match state {
        State::Think => w.flag(Status::UnclosedThink, think_at),
        State::Block => w.flag(Status::UnclosedBlock, unit_at),
        State::AfterBlock => w.flag(Status::BlockWithoutSummary, unit_at),
        State::Summary => w.flag(Status::UnclosedSummary, unit_at),
        State::Pre | State::After => {}
    }
    if w.problem.is_none() {
        if out.blocks.len() != out.summaries.len() {
            w.flag(Status::CountMismatch, w.quoted.unwrap_or(0));
        } else if let Some(q) = w.quoted {
            w.flag(Status::DelimiterInContent, q);
        }
    }
    if let Some((status, offset)) = w.problem {
        out.status = status;
        out.error_offset = Some(offset);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status_of(s: &str) -> (Status, Option<usize>) {
        let p = parse(s);
        (p.status, p.error_offset)
    }

    const OK: &str = "<think>\n<|block_start|> step one <|block_end|>\n<|summary_start|> one <|summary_end|>\n\n<|block_start|>two<|block_end|><|summary_start|>2<|summary_end|>\n</think>\n\nanswer 42";

    #[test]
    fn well_formed() {
        let p = parse(OK);
        assert_eq!(p.status, Status::Ok);
        assert_eq!(p.error_offset, None);
        let t = |r: &Range<usize>| &OK[r.clone()];
        assert_eq!(p.blocks.iter().map(t).collect::<Vec<_>>(), ["step one", "two"]);
        assert_eq!(p.summaries.iter().map(t).collect::<Vec<_>>(), ["one", "2"]);
        assert_eq!(t(p.final_answer.as_ref().unwrap()), "answer 42");
        assert_eq!(p.block_stats, TextStats { chars: 11, words: 3 });
        assert!(t(p.reasoning.as_ref().unwrap()).starts_with("\n<|block_start|>"));
    }

    #[test]
    fn spans_are_lossless() {
        for s in [
            OK,
            "",
            "no think",
            "<think><|block_start|>a",
            "x</think><|summary_end|>",
            "<think><|block_start|>a<|summary_start|>b<|block_end|>",
        ] {
            let p = parse(s);
            let mut pos = 0;
            for sp in &p.spans {
                assert_eq!(sp.start, pos);
                assert!(sp.end > sp.start);
                pos = sp.end;
            }
            assert_eq!(pos, s.len(), "{s:?}");
        }
    }

    #[test]
    fn statuses() {
        assert_eq!(status_of(""), (Status::Empty, Some(0)));
        assert_eq!(status_of("just text"), (Status::NoThink, Some(0)));
        assert_eq!(status_of("<think>raw</think>a").0, Status::NoBlocks);
        assert_eq!(status_of(&format!("x{OK}")), (Status::TextBeforeThink, Some(0)));
        assert_eq!(
            status_of("<think><|block_start|>a<|block_end|><|summary_start|>b<|summary_end|></think><|block_start|>").0,
            Status::UnitOutsideThink
        );
        assert_eq!(
            status_of("<think><|block_start|>a<|block_end|><|summary_start|>b<|summary_end|><|block_end|></think>").0,
            Status::StrayDelimiter
        );
        assert_eq!(
            status_of("<think><|block_start|>a<|block_end|><|summary_start|>b<|summary_end|>"),
            (Status::UnclosedThink, Some(0))
        );
        assert_eq!(status_of("<think><|block_start|>a"), (Status::UnclosedBlock, Some(7)));
        assert_eq!(status_of("<think><|block_start|>a<|block_start|>"), (Status::NestedBlock, Some(23)));
        assert_eq!(status_of("<think><|block_start|>a<|block_end|></think>"), (Status::BlockWithoutSummary, Some(7)));
        assert_eq!(status_of("<think><|block_start|>a<|block_end|><|summary_start|>b<|summary_end|><|summary_start|>c<|summary_end|></think>").0, Status::SummaryWithoutBlock);
        assert_eq!(
            status_of("<think><|block_start|>a<|block_end|><|summary_start|>b</think>").0,
            Status::UnclosedSummary
        );
        assert_eq!(
            status_of("<think><|block_start|>a<|block_end|> x <|summary_start|>b<|summary_end|></think>"),
            (Status::TextBetweenUnits, Some(37))
        );
        assert_eq!(
            status_of("<think><|block_start|> <|block_end|><|summary_start|>b<|summary_end|></think>"),
            (Status::EmptyBlock, Some(7))
        );
        assert_eq!(
            status_of("<think><|block_start|>a<|block_end|><|summary_start|>\n<|summary_end|></think>").0,
            Status::EmptySummary
        );
        assert_eq!(
            status_of("<think><|block_start|>a<|block_end|><|summary_start|>[Missing summary]<|summary_end|></think>")
                .0,
            Status::PlaceholderSummary
        );
        assert_eq!(status_of("<think><|block_start|>a \"<|summary_start|>q<|summary_end|>\"<|block_end|><|summary_start|>b<|summary_end|></think>").0, Status::CountMismatch);
        assert_eq!(
            status_of("<think><|block_start|>a \"<think>\"<|block_end|><|summary_start|>b<|summary_end|></think>").0,
            Status::DelimiterInContent
        );
    }

    #[test]
    fn tutorial_semantics_on_malformed() {
        // Two independent searches: the unclosed second start is ignored, the summary search
        // does not care about blocks.
        let s = "<|block_start|> a <|block_start|> b <|block_end|> c <|block_start|> d";
        let p = parse(s);
        assert_eq!(p.blocks.iter().map(|r| &s[r.clone()]).collect::<Vec<_>>(), ["a <|block_start|> b"]);
        assert_eq!(p.final_answer, None);
        assert_eq!(p.reasoning, None);
        let s = "</think> x </think>  y ";
        assert_eq!(&s[parse(s).final_answer.unwrap()], "y");
    }
}
