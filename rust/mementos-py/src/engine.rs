//! The engine's switches as every binding takes them: keyword arguments of the same names and
//! defaults in `compress_batch`, `compress`, `replay_batch`, `replay_curve`, `eviction_plan` and
//! `analyze_tokens`, seen by the Rust side as one [`Switches`].

use mementos_core::compact::EngineOptions;

/// The engine's switches (keyword arguments of the same names).
#[derive(Clone, Copy)]
pub(crate) struct Switches {
    pub(crate) mask_delimiters: bool,
    pub(crate) keep_last_block_for_answer: bool,
    pub(crate) restart_mode: bool,
    pub(crate) compact_on_summary_end: bool,
}

impl Switches {
    pub(crate) fn engine(self, keep_last_k: i64) -> EngineOptions {
        EngineOptions {
            keep_last_k,
            mask_delimiters: self.mask_delimiters,
            keep_last_block_for_answer: self.keep_last_block_for_answer,
            restart_mode: self.restart_mode,
            compact_on_summary_end: self.compact_on_summary_end,
        }
    }
}

/// A `#[pyfunction]` taking the engine's switches between its other arguments, declared once
/// here (a macro because pyo3 cannot gather keyword arguments into a struct). The caller writes
/// the signature and the parameters before and after the switches, in parentheses, and names the
/// [`Switches`] its body sees:
///
/// ```ignore
/// engine_binding! {
///     /// Doc.
///     signature((column, keep_last_k=0, *), (threads=None))
///     fn name<'py>((py: Python<'py>, column: AnyArray, keep_last_k: i64), sw, (threads: Option<usize>)) -> R {
///         body using `sw`
///     }
/// }
/// ```
macro_rules! engine_binding {
    (
        $(#[$meta:meta])*
        signature(($($sb:tt)*), ($($sa:tt)*))
        fn $name:ident<$($lt:lifetime),*>(($($pb:tt)*), $sw:ident, ($($pa:tt)*)) -> $ret:ty $body:block
    ) => {
        $(#[$meta])*
        #[pyfunction]
        #[pyo3(signature = ($($sb)*, mask_delimiters=false, keep_last_block_for_answer=false, restart_mode=false, compact_on_summary_end=true, $($sa)*))]
        #[allow(clippy::too_many_arguments)]
        fn $name<$($lt),*>(
            $($pb)*,
            mask_delimiters: bool,
            keep_last_block_for_answer: bool,
            restart_mode: bool,
            compact_on_summary_end: bool,
            $($pa)*
        ) -> $ret {
            let $sw = $crate::engine::Switches {
                mask_delimiters,
                keep_last_block_for_answer,
                restart_mode,
                compact_on_summary_end,
            };
            $body
        }
    };
}

pub(crate) use engine_binding;
