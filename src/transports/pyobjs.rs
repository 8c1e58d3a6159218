//! The Python objects the native transports call into: asyncio names
//! looked up once per process (`cached`), and the "unless done" future
//! helpers. A leaf: it depends on nothing else in the crate.

use pyo3::intern;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::PyString;

/// `asyncio.futures._set_result_unless_cancelled`.
pub(crate) static SET_RESULT_UNLESS_CANCELLED: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
/// `asyncio.trsock.TransportSocket`.
pub(crate) static TRANSPORT_SOCKET: PyOnceLock<Py<PyAny>> = PyOnceLock::new();

/// `module.attr`, imported once per process into `cell`.
pub(crate) fn cached<'py>(
    py: Python<'py>,
    cell: &'static PyOnceLock<Py<PyAny>>,
    module: &str,
    attr: &str,
) -> PyResult<Bound<'py, PyAny>> {
    cell.get_or_try_init(py, || py.import(module)?.getattr(attr).map(Bound::unbind))
        .map(|o| o.bind(py).clone())
}

/// `fut.set_result(value)` unless `fut` is done (asyncio's helper of the
/// same name, without the cancelled check's name).
pub(crate) fn set_result_unless_done(
    fut: &Bound<'_, PyAny>,
    value: &Bound<'_, PyAny>,
) -> PyResult<()> {
    settle_unless_done(fut, intern!(fut.py(), "set_result"), value)
}

/// `fut.set_exception(exc)` unless `fut` is done.
pub(crate) fn set_exception_unless_done(
    fut: &Bound<'_, PyAny>,
    exc: &Bound<'_, PyAny>,
) -> PyResult<()> {
    settle_unless_done(fut, intern!(fut.py(), "set_exception"), exc)
}

/// `fut.<setter>(arg)` unless `fut` is done.
fn settle_unless_done(
    fut: &Bound<'_, PyAny>,
    setter: &Bound<'_, PyString>,
    arg: &Bound<'_, PyAny>,
) -> PyResult<()> {
    if !fut.call_method0(intern!(fut.py(), "done"))?.is_truthy()? {
        fut.call_method1(setter, (arg,))?;
    }
    Ok(())
}
