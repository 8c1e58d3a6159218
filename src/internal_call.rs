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

/// A native callback for the loop's ready queue or timer heap.
#[pyclass(frozen, module = "oxloop._core")]
pub struct InternalCall {
    /// What asyncio's bound method would be called (`Type.method`).
    qualname: &'static str,
    /// The transport or listener the step acts on.
    target: Py<PyAny>,
    step: Step,
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
            target: target.clone().unbind(),
            step,
        };
        Ok(Bound::new(target.py(), call)?.into_any())
    }
}

#[pymethods]
impl InternalCall {
    #[pyo3(signature = (*args))]
    fn __call__(&self, py: Python<'_>, args: &Bound<'_, PyTuple>) -> PyResult<()> {
        (self.step)(self.target.bind(py), args)
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
        Ok(format!(
            "<internal method {name} of {}>",
            self.target.bind(py).repr()?
        ))
    }

    /// The target may reference the handle holding this call (a listener
    /// keeps its retry timer): report it, as a bound method does.
    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        visit.call(&self.target)
    }
}
