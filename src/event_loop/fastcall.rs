//! Raw `METH_FASTCALL | METH_KEYWORDS` entries for the scheduling methods
//! (`call_soon`, `call_soon_threadsafe`, `call_later`, `call_at`) and
//! `create_task`.
//!
//! These are the loop's hottest calls (asyncio's tasks and futures call
//! `call_soon(cb, arg, context=ctx)` for every step and wake-up). PyO3's
//! generic argument parsing and method trampoline cost about a tenth of a
//! `call_soon`; these entries parse the one shape these methods have
//! (`lead` positional parameters, `*args`, `context=`) by hand and call the
//! same Rust code (`LoopCore::call_soon`, ...). They replace the PyO3-made
//! methods in `LoopCore`'s type dict at module init (`install`).
//!
//! The `*args` tuple is built here, and left out of the garbage
//! collector's lists when none of its items could ever be in a cycle
//! (`never_in_a_cycle`): the collector would untrack it at its first pass
//! anyway, but a burst of queued calls would have it walked until then.
//!
//! Invariants:
//! - The method descriptor checks that `self` is a `LoopCore` (or a
//!   subclass) before calling us, as for any method of a C type.
//! - No `Py<T>` is dropped on the success path (PyO3 would defer such a
//!   decref outside its own trampolines); errors and panics become Python
//!   exceptions, as PyO3's trampoline makes them.

use std::panic::AssertUnwindSafe;

use pyo3::exceptions::PyTypeError;
use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyTuple};
use pyo3::PyTypeInfo;

use super::LoopCore;

/// A method's arguments, split: the leading positionals, the rest as the
/// `*args` tuple, and `context=`.
struct Parsed<'py> {
    lead: [*mut ffi::PyObject; 2],
    rest: Bound<'py, PyTuple>,
    context: Option<Bound<'py, PyAny>>,
}

fn missing(method: &str, names: &[&str]) -> PyErr {
    let quoted: Vec<String> = names.iter().map(|n| format!("'{n}'")).collect();
    PyTypeError::new_err(format!(
        "LoopCore.{method}() missing {} required positional argument{}: {}",
        names.len(),
        if names.len() == 1 { "" } else { "s" },
        quoted.join(" and ")
    ))
}

/// The `"context"` string object that callers other than our own
/// `intern!` use (3.11's C asyncio passes its own static string, which is
/// not the interned one): remembered, with a reference held, the first
/// time a comparison finds it, so later calls match it by address.
static CONTEXT_ALT: pyo3::sync::PyOnceLock<Py<pyo3::types::PyString>> =
    pyo3::sync::PyOnceLock::new();

/// Whether the keyword name `name` (not the interned `"context"`) is
/// `"context"`.
///
/// # Safety
/// `name` is a live `str` (a keyword name of a vectorcall); GIL held.
#[inline]
unsafe fn is_context_name(py: Python<'_>, name: *mut ffi::PyObject) -> bool {
    if CONTEXT_ALT.get(py).is_some_and(|alt| alt.as_ptr() == name) {
        return true;
    }
    // SAFETY: see the function's contract.
    let equal = unsafe { ffi::PyUnicode_CompareWithASCIIString(name, c"context".as_ptr()) } == 0;
    if equal && CONTEXT_ALT.get(py).is_none() {
        // SAFETY: as above; a new reference to a live str.
        let alt = unsafe { Borrowed::from_ptr(py, name) }.to_owned();
        // SAFETY: `name` is a `str` (keyword names are).
        let alt = unsafe { alt.cast_into_unchecked::<pyo3::types::PyString>() };
        let _ = CONTEXT_ALT.set(py, alt.unbind());
    }
    equal
}

/// Whether a tuple holding `obj` can be left out of the collector's lists
/// for good: CPython's test (`_PyObject_GC_MAY_BE_TRACKED`) is that `obj`
/// is not a GC object, or is an exact tuple the collector does not track.
/// Any other untracked container (a dict of atoms, one of our handles) may
/// be tracked again later, so it counts as tracked.
///
/// # Safety
/// `obj` is a live object; GIL held.
#[inline(always)]
unsafe fn never_in_a_cycle(obj: *mut ffi::PyObject) -> bool {
    // SAFETY: see the function's contract; these only read the object's
    // type and its GC header.
    unsafe {
        ffi::PyObject_IS_GC(obj) == 0
            || (ffi::PyTuple_CheckExact(obj) != 0 && ffi::PyObject_GC_IsTracked(obj) == 0)
    }
}

/// Parses `(lead..., *args, context=None)`.
///
/// # Safety
/// The vectorcall protocol's arguments, with the GIL held.
#[inline(always)]
unsafe fn parse<'py>(
    py: Python<'py>,
    method: &str,
    lead_names: &[&str],
    args: *const *mut ffi::PyObject,
    nargsf: ffi::Py_ssize_t,
    kwnames: *mut ffi::PyObject,
) -> PyResult<Parsed<'py>> {
    let nargs = unsafe { ffi::PyVectorcall_NARGS(nargsf as usize) } as usize;
    let lead = lead_names.len();
    let mut parsed_lead = [std::ptr::null_mut(); 2];
    for (i, slot) in parsed_lead.iter_mut().enumerate().take(lead.min(nargs)) {
        *slot = unsafe { *args.add(i) };
    }
    let n_rest = nargs.saturating_sub(lead);
    let rest = if n_rest == 0 {
        PyTuple::empty(py)
    } else {
        // SAFETY: a new tuple of n_rest slots, each filled with a new
        // reference before anyone sees it.
        unsafe {
            let t = ffi::PyTuple_New(n_rest as ffi::Py_ssize_t);
            if t.is_null() {
                return Err(PyErr::fetch(py));
            }
            let mut atomic = true;
            for i in 0..n_rest {
                let item = *args.add(lead + i);
                ffi::Py_INCREF(item);
                ffi::PyTuple_SET_ITEM(t, i as ffi::Py_ssize_t, item);
                atomic &= never_in_a_cycle(item);
            }
            if atomic {
                // CPython's own rule for tuples (`_PyTuple_MaybeUntrack`,
                // which its collector applies only once the tuple survives
                // a pass): no cycle can run through this one.
                ffi::PyObject_GC_UnTrack(t.cast());
            }
            Bound::from_owned_ptr(py, t).cast_into_unchecked::<PyTuple>()
        }
    };
    let mut context = None;
    if !kwnames.is_null() {
        let n_kw = unsafe { ffi::PyTuple_GET_SIZE(kwnames) } as usize;
        let want = pyo3::intern!(py, "context").as_ptr();
        for i in 0..n_kw {
            let name = unsafe { ffi::PyTuple_GET_ITEM(kwnames, i as ffi::Py_ssize_t) };
            let is_context = name == want || unsafe { is_context_name(py, name) };
            let value = unsafe { *args.add(nargs + i) };
            if is_context {
                context = Some(unsafe { Borrowed::from_ptr(py, value) }.to_owned());
                continue;
            }
            // A leading parameter given by keyword (`call_soon(callback=f)`).
            let name = unsafe { Borrowed::from_ptr(py, name) }.to_owned();
            let at = lead_names.iter().position(|n| name.eq(*n).unwrap_or(false));
            match at {
                Some(at) if parsed_lead[at].is_null() => parsed_lead[at] = value,
                Some(_) => {
                    return Err(PyTypeError::new_err(format!(
                        "LoopCore.{method}() got multiple values for argument '{name}'"
                    )))
                }
                None => {
                    return Err(PyTypeError::new_err(format!(
                        "LoopCore.{method}() got an unexpected keyword argument '{name}'"
                    )))
                }
            }
        }
    }
    if let Some(first) = parsed_lead[..lead].iter().position(|p| p.is_null()) {
        let names: Vec<&str> = (first..lead)
            .filter(|&i| parsed_lead[i].is_null())
            .map(|i| lead_names[i])
            .collect();
        return Err(missing(method, &names));
    }
    Ok(Parsed {
        lead: parsed_lead,
        rest,
        context,
    })
}

/// Runs `f` as PyO3's trampoline would: its error or panic becomes the
/// raised exception (NULL).
#[inline(always)]
unsafe fn entry(f: impl FnOnce(Python<'_>) -> PyResult<*mut ffi::PyObject>) -> *mut ffi::PyObject {
    // SAFETY: CPython calls methods with the GIL held.
    let py = unsafe { Python::assume_attached() };
    match std::panic::catch_unwind(AssertUnwindSafe(|| f(py))) {
        Ok(Ok(obj)) => obj,
        Ok(Err(e)) => {
            e.restore(py);
            std::ptr::null_mut()
        }
        Err(payload) => {
            let msg = payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "panic in a scheduling method".into());
            pyo3::panic::PanicException::new_err(msg).restore(py);
            std::ptr::null_mut()
        }
    }
}

/// `self` as the `LoopCore` it is (the descriptor checked its type).
#[inline(always)]
unsafe fn this<'a>(py: Python<'_>, slf: *mut ffi::PyObject) -> &'a LoopCore {
    let bound = unsafe { Borrowed::from_ptr(py, slf).cast_unchecked::<LoopCore>() };
    // SAFETY: the object outlives the call (the caller holds it).
    unsafe { &*(bound.get() as *const LoopCore) }
}

/// The argument at `ptr` (borrowed from the caller's vector) as an owned
/// reference.
///
/// # Safety
/// `ptr` is a live object the caller holds for the call.
#[inline(always)]
unsafe fn arg<'py>(py: Python<'py>, ptr: *mut ffi::PyObject) -> Bound<'py, PyAny> {
    // SAFETY: the caller's argument vector holds `ptr` for the call.
    unsafe { Borrowed::from_ptr(py, ptr).to_owned() }
}

/// One raw scheduling entry `name(lead..., *args, context=None)`: parses
/// the call (`parse`), then runs `body` with the GIL token, `self` and the
/// parsed arguments, and hands back its new reference.
macro_rules! scheduling_entry {
    ($name:ident, [$($lead:literal),+], |$py:ident, $slf:ident, $p:ident| $body:expr) => {
        unsafe extern "C" fn $name(
            $slf: *mut ffi::PyObject,
            args: *const *mut ffi::PyObject,
            nargsf: ffi::Py_ssize_t,
            kwnames: *mut ffi::PyObject,
        ) -> *mut ffi::PyObject {
            // SAFETY: CPython calls this as a METH_FASTCALL|METH_KEYWORDS
            // method of a `LoopCore` (the descriptor checked `self`), with
            // `nargsf` arguments at `args` and their names in `kwnames`.
            unsafe {
                entry(|$py| {
                    let $p = parse($py, stringify!($name), &[$($lead),+], args, nargsf, kwnames)?;
                    $body.map(Py::into_ptr)
                })
            }
        }
    };
}

scheduling_entry!(call_soon, ["callback"], |py, slf, p| {
    this(py, slf).call_soon::<false>(py, arg(py, p.lead[0]), p.rest, p.context)
});

scheduling_entry!(call_soon_threadsafe, ["callback"], |py, slf, p| {
    this(py, slf).call_soon::<true>(py, arg(py, p.lead[0]), p.rest, p.context)
});

scheduling_entry!(call_later, ["delay", "callback"], |py, slf, p| {
    let core = Borrowed::from_ptr(py, slf).cast_unchecked::<LoopCore>();
    LoopCore::call_later(
        &core,
        arg(py, p.lead[0]),
        arg(py, p.lead[1]),
        p.rest,
        p.context,
    )
});

scheduling_entry!(call_at, ["when", "callback"], |py, slf, p| {
    this(py, slf).call_at(
        py,
        arg(py, p.lead[0]),
        arg(py, p.lead[1]),
        p.rest,
        p.context,
    )
});

/// `create_task(coro, **kwargs)`: the common call (one positional, no
/// keyword) skips PyO3's `*args` tuple and `**kwargs` parsing; keywords are
/// gathered into the dict `LoopCore::create_task` takes.
unsafe extern "C" fn create_task(
    slf: *mut ffi::PyObject,
    args: *const *mut ffi::PyObject,
    nargsf: ffi::Py_ssize_t,
    kwnames: *mut ffi::PyObject,
) -> *mut ffi::PyObject {
    unsafe {
        entry(|py| {
            let nargs = ffi::PyVectorcall_NARGS(nargsf as usize) as usize;
            if nargs > 1 {
                return Err(PyTypeError::new_err(format!(
                    "LoopCore.create_task() takes 1 positional argument but {nargs} were given"
                )));
            }
            let mut coro = (nargs == 1).then(|| Borrowed::from_ptr(py, *args).to_owned());
            let n_kw = if kwnames.is_null() {
                0
            } else {
                ffi::PyTuple_GET_SIZE(kwnames) as usize
            };
            let mut kwargs = None;
            if n_kw > 0 {
                let dict = PyDict::new(py);
                for i in 0..n_kw {
                    let name = Borrowed::from_ptr(
                        py,
                        ffi::PyTuple_GET_ITEM(kwnames, i as ffi::Py_ssize_t),
                    );
                    let value = Borrowed::from_ptr(py, *args.add(nargs + i));
                    if name.eq("coro")? {
                        if coro.is_some() {
                            return Err(PyTypeError::new_err(
                                "LoopCore.create_task() got multiple values for argument 'coro'",
                            ));
                        }
                        coro = Some(value.to_owned());
                    } else {
                        dict.set_item(name, value)?;
                    }
                }
                kwargs = Some(dict);
            }
            let Some(coro) = coro else {
                return Err(missing("create_task", &["coro"]));
            };
            let core = Borrowed::from_ptr(py, slf).cast_unchecked::<LoopCore>();
            LoopCore::create_task(&core, coro, kwargs).map(Bound::into_ptr)
        })
    }
}

/// The method table; CPython keeps pointers into it for the life of the
/// type, so it is static and only read after `install`.
struct Defs([ffi::PyMethodDef; 5]);
// SAFETY: never written after construction; read with the GIL held.
unsafe impl Sync for Defs {}

const FLAGS: std::ffi::c_int = ffi::METH_FASTCALL | ffi::METH_KEYWORDS;

static DEFS: Defs = Defs([
    ffi::PyMethodDef {
        ml_name: c"call_soon".as_ptr(),
        ml_meth: ffi::PyMethodDefPointer {
            PyCFunctionFastWithKeywords: call_soon,
        },
        ml_flags: FLAGS,
        ml_doc: c"call_soon($self, callback, *args, context=None)\n--\n\nSchedules `callback(*args)` to run soon, in `context`.".as_ptr(),
    },
    ffi::PyMethodDef {
        ml_name: c"call_soon_threadsafe".as_ptr(),
        ml_meth: ffi::PyMethodDefPointer {
            PyCFunctionFastWithKeywords: call_soon_threadsafe,
        },
        ml_flags: FLAGS,
        ml_doc: c"call_soon_threadsafe($self, callback, *args, context=None)\n--\n\n`call_soon` from any thread; wakes the loop.".as_ptr(),
    },
    ffi::PyMethodDef {
        ml_name: c"call_later".as_ptr(),
        ml_meth: ffi::PyMethodDefPointer {
            PyCFunctionFastWithKeywords: call_later,
        },
        ml_flags: FLAGS,
        ml_doc: c"call_later($self, delay, callback, *args, context=None)\n--\n\nSchedules `callback(*args)` in `delay` seconds.".as_ptr(),
    },
    ffi::PyMethodDef {
        ml_name: c"call_at".as_ptr(),
        ml_meth: ffi::PyMethodDefPointer {
            PyCFunctionFastWithKeywords: call_at,
        },
        ml_flags: FLAGS,
        ml_doc: c"call_at($self, when, callback, *args, context=None)\n--\n\nSchedules `callback(*args)` at `when` on the loop's clock.".as_ptr(),
    },
    ffi::PyMethodDef {
        ml_name: c"create_task".as_ptr(),
        ml_meth: ffi::PyMethodDefPointer {
            PyCFunctionFastWithKeywords: create_task,
        },
        ml_flags: FLAGS,
        ml_doc: c"create_task($self, coro, **kwargs)\n--\n\nSchedules a coroutine as an `asyncio.Task`.".as_ptr(),
    },
]);

/// Puts the entries in `LoopCore`'s type dict (at module init, before any
/// subclass exists).
pub(crate) fn install(py: Python<'_>) -> PyResult<()> {
    let ty = LoopCore::type_object(py);
    for def in &DEFS.0 {
        // SAFETY: `def` is static; `PyDescr_NewMethod` only reads it (the
        // *mut is the C API's signature); GIL held.
        let descr = unsafe {
            Bound::from_owned_ptr_or_err(
                py,
                ffi::PyDescr_NewMethod(
                    ty.as_type_ptr(),
                    (def as *const ffi::PyMethodDef).cast_mut(),
                ),
            )?
        };
        // SAFETY: a C string literal.
        let name = unsafe { std::ffi::CStr::from_ptr(def.ml_name) }
            .to_str()
            .unwrap_or("");
        ty.setattr(pyo3::types::PyString::intern(py, name), descr)?;
    }
    Ok(())
}
