//! The exception classes of `mementos_fast`, created once (the first time `_core` is imported)
//! and the one mapping from each error enum of the pure crates to them. So the same bad input
//! raises the same class whichever function it reaches; nothing is looked up by name at raise
//! time. `mementos_fast.errors` re-exports the classes; their `__module__` is that module (where
//! pickle finds them).
//!
//! `MementoTypeError` and the others derive from two bases (the package's and Python's own, so
//! `except ValueError` still works), which `create_exception!` cannot express: they are built
//! with `type(name, bases, namespace)`.

use std::ffi::CStr;

use mementos_bpe::BpeError;
use mementos_core::CoreError;
use mementos_export::ExportError;
use mementos_tokens::TokensError;
use pyo3::exceptions::{PyException, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyCFunction, PyDict, PyString, PyTuple, PyType};

/// The package's exception classes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Class {
    /// `MementoError(Exception)`: the base of every error raised on purpose.
    Error,
    /// `MementoInternalError(MementoError)`: a bug (a Rust panic caught at the boundary).
    Internal,
    /// `MementoTypeError(MementoError, TypeError)`.
    Type,
    /// `MementoValueError(MementoError, ValueError)`.
    Value,
    /// `MementoUnsupportedTokenizer(MementoValueError)`.
    UnsupportedTokenizer,
    /// `MementoFormatError(MementoError, ValueError)`, with `row`, `offset`, `status`, `detail`.
    Format,
}

impl Class {
    pub(crate) const ALL: [Class; 6] =
        [Class::Error, Class::Internal, Class::Type, Class::Value, Class::UnsupportedTokenizer, Class::Format];

    pub(crate) fn name(self) -> &'static str {
        match self {
            Class::Error => "MementoError",
            Class::Internal => "MementoInternalError",
            Class::Type => "MementoTypeError",
            Class::Value => "MementoValueError",
            Class::UnsupportedTokenizer => "MementoUnsupportedTokenizer",
            Class::Format => "MementoFormatError",
        }
    }

    fn doc(self) -> &'static str {
        match self {
            Class::Error => "Base class of every mementos_fast error.",
            Class::Internal => "A bug inside mementos_fast (a Rust panic caught at the boundary). Please report it.",
            Class::Type => "An argument of the wrong type (for example a column that is not Arrow string data).",
            Class::Value => "An argument with an invalid value.",
            Class::UnsupportedTokenizer => {
                "A tokenizer the fast BPE backend cannot reproduce exactly (the message names the feature).\n\n\
                 Callers fall back to Hugging Face ``tokenizers`` for it; counts are never approximated."
            }
            Class::Format => {
                "A trace breaks the MEMENTO format (raised by ``strict=True`` modes).\n\n\
                 Attributes: ``row`` (index in the batch), ``offset`` (byte offset in the row's UTF-8 text),\n\
                 ``status`` (the status name, see ``mementos_fast.STATUSES``) and ``detail``."
            }
        }
    }

    /// The class, created on first use (module init creates them all).
    pub(crate) fn get(self, py: Python<'_>) -> PyResult<&Bound<'_, PyType>> {
        static CLASSES: PyOnceLock<Vec<Py<PyType>>> = PyOnceLock::new();
        let all = CLASSES.get_or_try_init(py, || create(py))?;
        Ok(all[self as usize].bind(py))
    }

    /// A new exception of this class with message `msg`.
    pub(crate) fn err(self, py: Python<'_>, msg: impl Into<String>) -> PyErr {
        match self.get(py) {
            Ok(cls) => PyErr::from_type(cls.clone(), msg.into()),
            Err(e) => e,
        }
    }
}

fn create(py: Python<'_>) -> PyResult<Vec<Py<PyType>>> {
    let mut made: Vec<Py<PyType>> = Vec::with_capacity(Class::ALL.len());
    for class in Class::ALL {
        let get = |c: Class| made[c as usize].bind(py).clone().into_any();
        let bases = match class {
            Class::Error => PyTuple::new(py, [py.get_type::<PyException>().into_any()])?,
            Class::Internal => PyTuple::new(py, [get(Class::Error)])?,
            Class::Type => PyTuple::new(py, [get(Class::Error), py.get_type::<PyTypeError>().into_any()])?,
            Class::Value | Class::Format => {
                PyTuple::new(py, [get(Class::Error), py.get_type::<PyValueError>().into_any()])?
            }
            Class::UnsupportedTokenizer => PyTuple::new(py, [get(Class::Value)])?,
        };
        let ns = PyDict::new(py);
        ns.set_item("__module__", "mementos_fast.errors")?;
        ns.set_item("__doc__", class.doc())?;
        if class == Class::Format {
            ns.set_item(
                "__init__",
                method(py, c"__init__", c"__init__(self, row, offset, status, detail='')\n--\n\n", format_init)?,
            )?;
            ns.set_item("__reduce__", method(py, c"__reduce__", c"__reduce__(self)\n--\n\n", format_reduce)?)?;
        }
        let cls = py.get_type::<PyType>().call1((class.name(), bases, ns))?.cast_into::<PyType>()?;
        made.push(cls.unbind());
    }
    Ok(made)
}

extern "C" {
    /// CPython's `instancemethod`: makes any callable bind `self` like a function defined in a
    /// class body (a builtin function alone does not).
    fn PyInstanceMethod_New(func: *mut pyo3::ffi::PyObject) -> *mut pyo3::ffi::PyObject;
}

type Method = fn(&Bound<'_, PyTuple>, Option<&Bound<'_, PyDict>>) -> PyResult<Py<PyAny>>;

/// A Rust function as a method of a class created with `type()` (`args[0]` is `self`).
fn method<'py>(py: Python<'py>, name: &'static CStr, doc: &'static CStr, f: Method) -> PyResult<Bound<'py, PyAny>> {
    let func = PyCFunction::new_closure(py, Some(name), Some(doc), f)?;
    // SAFETY: `func` is a valid object; PyInstanceMethod_New returns a new reference or NULL
    // with an exception set, which `from_owned_ptr_or_err` turns into the error.
    unsafe { Bound::from_owned_ptr_or_err(py, PyInstanceMethod_New(func.as_ptr())) }
}

/// Argument `i` (after `self`) of a call, positional or by `name`.
fn arg<'py>(
    args: &Bound<'py, PyTuple>,
    kwargs: Option<&Bound<'py, PyDict>>,
    i: usize,
    name: &str,
) -> PyResult<Option<Bound<'py, PyAny>>> {
    if i + 1 < args.len() {
        return args.get_item(i + 1).map(Some);
    }
    match kwargs {
        Some(k) => k.get_item(name),
        None => Ok(None),
    }
}

/// `MementoFormatError(row, offset, status, detail="")`: the message is
/// `row {row}: {status} at byte {offset}` (`: {detail}` when given).
fn format_init(args: &Bound<'_, PyTuple>, kwargs: Option<&Bound<'_, PyDict>>) -> PyResult<Py<PyAny>> {
    let py = args.py();
    let slf = args.get_item(0)?;
    if args.len() > 5 {
        return Err(PyTypeError::new_err("MementoFormatError takes at most 4 arguments (row, offset, status, detail)"));
    }
    let required = |i: usize, name: &str| {
        arg(args, kwargs, i, name)?
            .ok_or_else(|| PyTypeError::new_err(format!("MementoFormatError() missing required argument: '{name}'")))
    };
    let (row, offset, status) = (required(0, "row")?, required(1, "offset")?, required(2, "status")?);
    let detail = arg(args, kwargs, 3, "detail")?.unwrap_or_else(|| PyString::new(py, "").into_any());
    let mut msg = format!("row {}: {} at byte {}", row.str()?, status.str()?, offset.str()?);
    if detail.is_truthy()? {
        msg.push_str(&format!(": {}", detail.str()?));
    }
    slf.setattr("row", row)?;
    slf.setattr("offset", offset)?;
    slf.setattr("status", status)?;
    slf.setattr("detail", detail)?;
    py.get_type::<PyValueError>().getattr("__init__")?.call1((slf, msg))?;
    Ok(py.None())
}

/// Picklable across processes (Ray, multiprocessing): rebuilt from its four arguments.
fn format_reduce(args: &Bound<'_, PyTuple>, _kwargs: Option<&Bound<'_, PyDict>>) -> PyResult<Py<PyAny>> {
    let py = args.py();
    let slf = args.get_item(0)?;
    let fields = (slf.getattr("row")?, slf.getattr("offset")?, slf.getattr("status")?, slf.getattr("detail")?);
    Ok((slf.get_type(), fields).into_pyobject(py)?.into_any().unbind())
}

/// Add every class to `_core`.
pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    for class in Class::ALL {
        m.add(class.name(), class.get(m.py())?)?;
    }
    Ok(())
}

/// The Python exception of an error of a pure crate: one mapping per error enum.
pub(crate) trait ToPyErr {
    fn to_py_err(self, py: Python<'_>) -> PyErr;
}

impl ToPyErr for CoreError {
    fn to_py_err(self, py: Python<'_>) -> PyErr {
        let class = match &self {
            CoreError::UnsupportedType(_) => Class::Type,
            CoreError::InvalidArgument(_) => Class::Value,
            CoreError::Arrow(_) => Class::Error,
        };
        class.err(py, self.to_string())
    }
}

impl ToPyErr for TokensError {
    fn to_py_err(self, py: Python<'_>) -> PyErr {
        let class = match self {
            TokensError::Core(e) => return e.to_py_err(py),
            TokensError::Unsupported(_) => Class::UnsupportedTokenizer,
            TokensError::UnknownBackend(..) | TokensError::Tokenizer(_) | TokensError::MissingDelimiter(_) => {
                Class::Value
            }
        };
        class.err(py, self.to_string())
    }
}

impl ToPyErr for BpeError {
    fn to_py_err(self, py: Python<'_>) -> PyErr {
        let class = match self {
            BpeError::Unsupported(_) => Class::UnsupportedTokenizer,
            BpeError::Json(_) | BpeError::Invalid(_) => Class::Value,
        };
        class.err(py, self.to_string())
    }
}

impl ToPyErr for ExportError {
    fn to_py_err(self, py: Python<'_>) -> PyErr {
        let class = match self {
            ExportError::Unsupported(_) => Class::UnsupportedTokenizer,
            ExportError::UnknownBackend(_) | ExportError::Tokenizer(_) | ExportError::NotOneToken(_) => Class::Value,
        };
        class.err(py, self.to_string())
    }
}
