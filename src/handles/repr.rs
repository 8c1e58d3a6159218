//! `repr()` of handles: asyncio's `_format_callback_source` of the callback
//! and, in debug mode, where the handle was made.
//!
//! Invariant: a handle whose arguments contain the handle itself shows as
//! "..." the second time (`ReprGuard`, per thread), as reprlib does.

use pyo3::prelude::*;

use super::Handle;

/// Whether `asyncio.format_helpers` takes `debug=` (CPython 3.14+).
static FORMAT_TAKES_DEBUG: pyo3::sync::PyOnceLock<bool> = pyo3::sync::PyOnceLock::new();

fn format_takes_debug(py: Python<'_>, helpers: &Bound<'_, PyAny>) -> PyResult<bool> {
    FORMAT_TAKES_DEBUG
        .get_or_try_init(py, || {
            let code = helpers
                .getattr("_format_args_and_kwargs")?
                .getattr("__code__")?;
            let kwonly: usize = code.getattr("co_kwonlyargcount")?.extract()?;
            Ok::<bool, PyErr>(kwonly > 0)
        })
        .copied()
}

thread_local! {
    /// Handles whose repr is being built on this thread.
    static IN_REPR: std::cell::RefCell<Vec<usize>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Marks a handle as being repr'd on this thread until dropped.
struct ReprGuard(usize);

impl ReprGuard {
    fn enter(id: usize) -> Option<Self> {
        IN_REPR.with(|v| {
            let mut v = v.borrow_mut();
            if v.contains(&id) {
                None
            } else {
                v.push(id);
                Some(ReprGuard(id))
            }
        })
    }
}

impl Drop for ReprGuard {
    fn drop(&mut self) {
        IN_REPR.with(|v| v.borrow_mut().retain(|&x| x != self.0));
    }
}

impl Handle {
    /// The callback's source and, in debug mode, where the handle was made.
    pub(super) fn describe(&self, py: Python<'_>) -> PyResult<String> {
        let Some(_guard) = ReprGuard::enter(self as *const Self as usize) else {
            return Ok("...".into());
        };
        let cb = self.inner.bind(py);
        let mut text = String::new();
        if let Some(cb) = cb {
            let helpers = py.import("asyncio.format_helpers")?;
            let format = helpers.getattr("_format_callback_source")?;
            // From 3.14 on asyncio shows a callback's arguments in debug mode
            // only (`debug=`); a handle made in debug mode has a traceback.
            text = if self.source_traceback.is_some() && format_takes_debug(py, &helpers)? {
                let kwargs = pyo3::types::PyDict::new(py);
                kwargs.set_item("debug", true)?;
                format.call((cb.func, cb.args), Some(&kwargs))?
            } else {
                format.call1((cb.func, cb.args))?
            }
            .extract()?;
        }
        if let Some(tb) = &self.source_traceback {
            let tb = tb.bind(py);
            if let Ok(last) = tb.get_item(tb.len()? - 1) {
                let file: String = last.getattr("filename")?.extract()?;
                let line: i64 = last.getattr("lineno")?.extract()?;
                if !text.is_empty() {
                    text.push(' ');
                }
                text.push_str(&format!("created at {file}:{line}"));
            }
        }
        Ok(text)
    }

    /// `<Class [cancelled] extra... source>`.
    pub(super) fn repr_with(
        &self,
        py: Python<'_>,
        class: &str,
        extra: Option<String>,
    ) -> PyResult<String> {
        let mut parts = vec![class.to_string()];
        if self.is_cancelled() {
            parts.push("cancelled".into());
        }
        parts.extend(extra);
        let src = self.describe(py)?;
        if !src.is_empty() {
            parts.push(src);
        }
        Ok(format!("<{}>", parts.join(" ")))
    }
}
