//! Row statuses: the structural diagnosis of one trace.
//!
//! A row gets exactly one status: the first problem the structural walk meets (in document
//! order of detection), with the byte offset where it lies. The docs (`docs/STATUS.md`) describe
//! each one; the order of this enum is the order of the dictionary in the Arrow `status` column.

/// Structural status of a row.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Status {
    /// `<think>`, then one or more block+memento pairs separated by whitespace only, `</think>`,
    /// then the answer.
    #[default]
    Ok = 0,
    /// The response is empty or whitespace only.
    Empty,
    /// No `<think>` anywhere.
    NoThink,
    /// A `<think>` but no `<|block_start|>` anywhere (a raw, unsegmented trace).
    NoBlocks,
    /// Non-whitespace text before `<think>`.
    TextBeforeThink,
    /// A block or summary delimiter before `<think>` or after `</think>`.
    UnitOutsideThink,
    /// A closing delimiter with nothing open, or a second `<think>`/`</think>`.
    StrayDelimiter,
    /// `<think>` is never closed by `</think>`.
    UnclosedThink,
    /// A `<|block_start|>` never closed by `<|block_end|>` (before `</think>` or the end).
    UnclosedBlock,
    /// A `<|block_start|>` inside an open block.
    NestedBlock,
    /// A closed block not followed by its `<|summary_start|>`.
    BlockWithoutSummary,
    /// A `<|summary_start|>` with no closed block before it.
    SummaryWithoutBlock,
    /// A `<|summary_start|>` never closed by `<|summary_end|>`.
    UnclosedSummary,
    /// Non-whitespace text between units (between `<think>`, a memento and the next block).
    TextBetweenUnits,
    /// A block whose content is only whitespace.
    EmptyBlock,
    /// A memento whose content is only whitespace.
    EmptySummary,
    /// A memento left as a pipeline placeholder (`[Missing summary]`, `Summarization failed`).
    PlaceholderSummary,
    /// Structure is sound but the tutorial's two independent searches find different numbers of
    /// blocks and summaries (delimiters quoted inside a block or memento).
    CountMismatch,
    /// Structure is sound and counts agree, but a delimiter string appears inside a block or
    /// memento (typically quoted in code); the tutorial's fields for this row may be cut there.
    DelimiterInContent,
}

impl Status {
    pub const ALL: [Status; 19] = [
        Status::Ok,
        Status::Empty,
        Status::NoThink,
        Status::NoBlocks,
        Status::TextBeforeThink,
        Status::UnitOutsideThink,
        Status::StrayDelimiter,
        Status::UnclosedThink,
        Status::UnclosedBlock,
        Status::NestedBlock,
        Status::BlockWithoutSummary,
        Status::SummaryWithoutBlock,
        Status::UnclosedSummary,
        Status::TextBetweenUnits,
        Status::EmptyBlock,
        Status::EmptySummary,
        Status::PlaceholderSummary,
        Status::CountMismatch,
        Status::DelimiterInContent,
    ];

    pub const fn name(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Empty => "empty",
            Status::NoThink => "no_think",
            Status::NoBlocks => "no_blocks",
            Status::TextBeforeThink => "text_before_think",
            Status::UnitOutsideThink => "unit_outside_think",
            Status::StrayDelimiter => "stray_delimiter",
            Status::UnclosedThink => "unclosed_think",
            Status::UnclosedBlock => "unclosed_block",
            Status::NestedBlock => "nested_block",
            Status::BlockWithoutSummary => "block_without_summary",
            Status::SummaryWithoutBlock => "summary_without_block",
            Status::UnclosedSummary => "unclosed_summary",
            Status::TextBetweenUnits => "text_between_units",
            Status::EmptyBlock => "empty_block",
            Status::EmptySummary => "empty_summary",
            Status::PlaceholderSummary => "placeholder_summary",
            Status::CountMismatch => "count_mismatch",
            Status::DelimiterInContent => "delimiter_in_content",
        }
    }

    pub const fn description(self) -> &'static str {
        match self {
            Status::Ok => "well-formed: <think>, block+memento pairs separated by whitespace, </think>, answer",
            Status::Empty => "the response is empty or only whitespace",
            Status::NoThink => "no <think> delimiter anywhere",
            Status::NoBlocks => "<think> present but no <|block_start|> anywhere (unsegmented trace)",
            Status::TextBeforeThink => "non-whitespace text before <think>",
            Status::UnitOutsideThink => "a block or summary delimiter before <think> or after </think>",
            Status::StrayDelimiter => "a closing delimiter with nothing open, or a repeated <think>/</think>",
            Status::UnclosedThink => "<think> is never closed by </think>",
            Status::UnclosedBlock => "a <|block_start|> never closed by <|block_end|>",
            Status::NestedBlock => "a <|block_start|> inside an open block",
            Status::BlockWithoutSummary => "a closed block not followed by <|summary_start|>",
            Status::SummaryWithoutBlock => "a <|summary_start|> with no closed block before it",
            Status::UnclosedSummary => "a <|summary_start|> never closed by <|summary_end|>",
            Status::TextBetweenUnits => "non-whitespace text between units inside <think>",
            Status::EmptyBlock => "a block with only whitespace inside",
            Status::EmptySummary => "a memento with only whitespace inside",
            Status::PlaceholderSummary => "a memento left as a placeholder ([Missing summary], Summarization failed)",
            Status::CountMismatch => "the tutorial's independent searches find different block and summary counts",
            Status::DelimiterInContent => "a delimiter string inside a block or memento (e.g. quoted in code)",
        }
    }
}
