//! Callbacks the loop's native code schedules on itself: a transport's
//! `connection_lost` step, its start of reading after `connection_made`, a
//! listener's resume after an accept error.
//!
//! asyncio schedules bound methods (`self._call_connection_lost`, ...) with
//! `call_soon`; oxloop queues an `InternalCall` at the same place in the
//! ready queue instead, so the order relative to the user's callbacks is
//! asyncio's, and the handle enters the callback's `contextvars.Context` as
//! it does for any callback. What differs: no attribute lookup on the
//! transport, and no Python-visible private method for each step. The
//! object is a plain Rust function plus the object it acts on; each owner
//! (transport, listener) provides its own function, so this module knows
//! none of them.
//!
//! Its `__qualname__` is the method's name asyncio would show
//! (`StreamTransport._call_connection_lost`), so a handle's repr, and debug
//! mode's slow-callback report, read as before.

use pyo3::prelude::*;
use pyo3::types::PyTuple;
use pyo3::{PyTraverseError, PyVisit};

/// One step: the object it acts on and the call's positional arguments.
pub(crate) type Step = fn(&Bound<'_, PyAny>, &Bound<'_, PyTuple>) -> PyResult<()>;

/// A step on Rust state that is no Python object (a datagram transport's
/// shared half): the closure owns what it acts on.
pub(crate) type NativeStep =
    Box<dyn Fn(Python<'_>, &Bound<'_, PyTuple>) -> PyResult<()> + Send + Sync>;

/// What the call runs.
enum Action {
    /// `step(target, args)`; the target is reported to the collector.
    OnObject { target: Py<PyAny>, step: Step },
    /// A closure over Rust state. What that state references is reported by
    /// the Python object that owns it, not here.
    Native(NativeStep),
}

/// A native callback for the loop's ready queue or timer heap.
#[pyclass(frozen, module = "oxloop._core")]
pub struct InternalCall {
    /// What asyncio's bound method would be called (`Type.method`).
    qualname: &'static str,
    action: Action,
}

impl InternalCall {
    /// A callable running `step(target, args)`.
    pub(crate) fn callable<'py>(
        target: &Bound<'py, PyAny>,
        qualname: &'static str,
        step: Step,
    ) -> PyResult<Bound<'py, PyAny>> {
        let call = Self {
            qualname,
            action: Action::OnObject {
                target: target.clone().unbind(),
                step,
            },
        };
        Ok(Bound::new(target.py(), call)?.into_any())
    }

    /// A callable running `step(args)`.
    pub(crate) fn native<'py>(
        py: Python<'py>,
        qualname: &'static str,
        step: NativeStep,
    ) -> PyResult<Bound<'py, PyAny>> {
        let call = Self {
            qualname,
            action: Action::Native(step),
        };
        Ok(Bound::new(py, call)?.into_any())
    }
}

#[pymethods]
impl InternalCall {
    #[pyo3(signature = (*args))]
    fn __call__(&self, py: Python<'_>, args: &Bound<'_, PyTuple>) -> PyResult<()> {
        match &self.action {
            Action::OnObject { target, step } => step(target.bind(py), args),
            Action::Native(step) => step(py, args),
        }
    }

    #[getter(__qualname__)]
    fn qualname(&self) -> &'static str {
        self.qualname
    }

    #[getter(__name__)]
    fn name(&self) -> &'static str {
        self.qualname.rsplit('.').next().unwrap_or(self.qualname)
    }

    fn __repr__(&self, py: Python<'_>) -> PyResult<String> {
        let (_, name) = self
            .qualname
            .rsplit_once('.')
            .unwrap_or(("", self.qualname));
        Ok(match &self.action {
            Action::OnObject { target, .. } => {
                format!("<internal method {name} of {}>", target.bind(py).repr()?)
            }
            Action::Native(_) => format!("<internal method {}>", self.qualname),
        })
    }

    /// The target may reference the handle holding this call (a listener
    /// keeps its retry timer): report it, as a bound method does.
    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        match &self.action {
            Action::OnObject { target, .. } => visit.call(target),
            Action::Native(_) => Ok(()),
        }
    }
}
