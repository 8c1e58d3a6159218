//! Free lists of handle objects and the type slots that use them.
//!
//! `call_soon` makes a handle and the loop frees it a moment later; the
//! generic path zeroes a fresh object (`PyType_GenericAlloc`) and frees it
//! through PyO3's dealloc trampoline. Here a freed handle (its fields
//! dropped, untracked, its weak references cleared) is kept for reuse, and
//! dealloc drops the fields directly (every field of a `Handle` is released
//! with a plain `Py_DECREF` or is not a Python object: no PyO3 GIL
//! bookkeeping is needed). `Handle`, `TimerHandle` and `ThreadSafeHandle`
//! each have a list; the two subclasses add no field (checked below), so
//! dropping the base `Handle` is dropping all of it.
//!
//! A recycled object is handed out two ways:
//! - `tp_alloc` (`alloc`): PyO3's generic `Py::new` path, which writes every
//!   field of the object it gets, so a recycled one needs no zeroing.
//! - `reuse`: the loop's own makers (`call_soon`, `call_later`, ...) skip
//!   PyO3's initializer (`object_new`, an empty-tuple argument, the
//!   initializer's bookkeeping: about 100 instructions a handle) and write
//!   only the `Handle` value into the recycled object. That is the whole of
//!   what a handle object's life changes: PyO3's other parts of a frozen,
//!   `Sync` pyclass without `dict` are zero-sized (no borrow flag, no
//!   thread checker), the weak-reference slot is NULL again once `dealloc`
//!   cleared the references, and the subclasses' own parts are zero-sized.
//!   The value's offset in the object is the one `dealloc` saw on a live
//!   object of the same type (`List::value_offset`).
//!
//! `tp_traverse` is ours too (`traverse`): the collector walks every
//! handle a user keeps (timers kept to cancel them, say), and PyO3's
//! generic slot costs about 150 instructions a call on top of the visits
//! (a guard in thread-local storage, a panic trap, a walk up the bases for
//! a super-type traverse). A handle's references are the `Handle` value's
//! (`Handle::traverse_contents`) and, as for any instance of a heap type,
//! its type.
//!
//! Invariants:
//! - A list holds only objects of exactly its type; Python subclasses take
//!   the generic path (`PyType_GenericAlloc`, `tp_free`).
//! - The lists are touched only by a thread attached to the interpreter
//!   with the GIL (tp_alloc/tp_dealloc, `reuse` with a `Python` token); see
//!   `crate::portability` before a free-threaded build.
//! - A recycled object is untracked; `Handle::tracked` tracks it where the
//!   handle is not left to the loop's custody.

use std::cell::UnsafeCell;

use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::PyTypeInfo;

use super::{Handle, ThreadSafeHandle, TimerHandle};

// The subclasses' own parts must need no dropping (see above).
const _: () = assert!(
    std::mem::size_of::<TimerHandle>() == 0
        && !std::mem::needs_drop::<TimerHandle>()
        && std::mem::size_of::<ThreadSafeHandle>() == 0
        && !std::mem::needs_drop::<ThreadSafeHandle>()
);

const CAPACITY: usize = 256;
const TYPES: usize = 3;

/// Index of each type's list.
pub(crate) const PLAIN: usize = 0;
pub(crate) const TIMER: usize = 1;
pub(crate) const THREADSAFE: usize = 2;

struct List {
    /// The exact type whose objects this list keeps.
    ty: *mut ffi::PyTypeObject,
    /// Where the `Handle` value sits in an object of `ty` (bytes from its
    /// start), as `dealloc` saw it; 0 until then (nothing to reuse yet).
    value_offset: usize,
    /// How many of `objs` are kept.
    len: usize,
    /// Freed objects of `ty`, untracked, their `Handle` value dropped.
    objs: [*mut ffi::PyObject; CAPACITY],
}

struct Shared(UnsafeCell<[List; TYPES]>);
// SAFETY: only touched with the GIL held (see the module's invariants).
unsafe impl Sync for Shared {}

const EMPTY: List = List {
    ty: std::ptr::null_mut(),
    value_offset: 0,
    len: 0,
    objs: [std::ptr::null_mut(); CAPACITY],
};
static LISTS: Shared = Shared(UnsafeCell::new([EMPTY; TYPES]));

/// Installs the slots on the three handle types (once, at module init,
/// before any handle exists).
pub(crate) fn install(py: Python<'_>) {
    let mut types = [std::ptr::null_mut(); TYPES];
    types[PLAIN] = Handle::type_object_raw(py);
    types[TIMER] = TimerHandle::type_object_raw(py);
    types[THREADSAFE] = ThreadSafeHandle::type_object_raw(py);
    // SAFETY: GIL held; the types are ours (heap types made by PyO3)
    // and have no instances yet; CPython reads these slots at each use.
    unsafe {
        let lists = &mut *LISTS.0.get();
        for (list, ty) in lists.iter_mut().zip(types) {
            list.ty = ty;
            (*ty).tp_alloc = Some(alloc);
            (*ty).tp_dealloc = Some(dealloc);
            (*ty).tp_traverse = Some(traverse);
        }
    }
}

/// Puts `handle` into a recycled object of list `which` (`PLAIN`, `TIMER`,
/// `THREADSAFE`: the type `T`), or gives it back when that list is empty.
/// The object is untracked (see the module's invariants).
#[inline]
pub(crate) fn reuse<'py, T: pyo3::PyClass>(
    py: Python<'py>,
    which: usize,
    handle: Handle,
) -> Result<Bound<'py, T>, Handle> {
    // SAFETY: GIL held (`py`). A listed object is a freed object of exactly
    // `list.ty` (= `T`'s type) whose `Handle` value was dropped and whose
    // other parts are as PyO3 made them (see the module's doc); it gets a
    // refcount and its type back (`PyObject_Init`) and a new value written
    // at the offset `dealloc` recorded for this very type.
    unsafe {
        let list = &mut (*LISTS.0.get())[which];
        if list.len == 0 || list.value_offset == 0 {
            return Err(handle);
        }
        debug_assert!(list.ty == T::type_object_raw(py));
        list.len -= 1;
        let obj = list.objs[list.len];
        ffi::PyObject_Init(obj, list.ty);
        std::ptr::write(
            obj.cast::<u8>().add(list.value_offset).cast::<Handle>(),
            handle,
        );
        Ok(Bound::from_owned_ptr(py, obj).cast_into_unchecked::<T>())
    }
}

/// The list of objects of exactly `ty`, if it has one.
#[inline(always)]
unsafe fn list_of(ty: *mut ffi::PyTypeObject) -> Option<&'static mut List> {
    // SAFETY: GIL held by the caller (see the module's invariants).
    unsafe { (*LISTS.0.get()).iter_mut().find(|l| l.ty == ty) }
}

unsafe extern "C" fn alloc(
    subtype: *mut ffi::PyTypeObject,
    nitems: ffi::Py_ssize_t,
) -> *mut ffi::PyObject {
    // SAFETY: CPython calls tp_alloc with the GIL held.
    unsafe {
        if nitems == 0 {
            if let Some(list) = list_of(subtype).filter(|l| l.len > 0) {
                list.len -= 1;
                let obj = list.objs[list.len];
                // Sets the type (a new reference to it), a refcount of 1.
                ffi::PyObject_Init(obj, subtype);
                return obj;
            }
        }
        ffi::PyType_GenericAlloc(subtype, nitems)
    }
}

unsafe extern "C" fn dealloc(obj: *mut ffi::PyObject) {
    // SAFETY: CPython calls tp_dealloc with the GIL held, on an object
    // of a handle type or a Python subclass of one, once no reference
    // is left. The fields are dropped exactly once, before the memory
    // is freed or recycled.
    unsafe {
        ffi::PyObject_GC_UnTrack(obj.cast());
        let ty = ffi::Py_TYPE(obj);
        // PyO3 keeps the weak-reference list in the object, at the
        // offset it gives the base type (inherited by the others).
        let weak_offset = (*(*LISTS.0.get())[PLAIN].ty).tp_weaklistoffset;
        if weak_offset > 0 {
            let slot = obj
                .cast::<u8>()
                .offset(weak_offset)
                .cast::<*mut ffi::PyObject>();
            if !(*slot).is_null() {
                ffi::PyObject_ClearWeakRefs(obj);
            }
        } else if weak_offset != 0 {
            // Not PyO3's slot in the object: let CPython find the list.
            ffi::PyObject_ClearWeakRefs(obj);
        }
        let py = Python::assume_attached();
        let handle: *const Handle = pyo3::Borrowed::from_ptr(py, obj)
            .cast_unchecked::<Handle>()
            .get();
        // The value lives in PyO3's UnsafeCell: writing through it is
        // allowed, and no reference to it is left.
        std::ptr::drop_in_place(handle.cast_mut());
        match list_of(ty).filter(|l| l.len < CAPACITY) {
            Some(list) => {
                list.value_offset = handle as usize - obj as usize;
                list.objs[list.len] = obj;
                list.len += 1;
            }
            None => {
                if let Some(free) = (*ty).tp_free {
                    free(obj.cast());
                }
            }
        }
        // Instances of heap types own a reference to their type.
        ffi::Py_DECREF(ty.cast());
    }
}

/// The three types' `tp_traverse`: the type (instances of heap types own a
/// reference to it; a Python subclass's `subtype_traverse` leaves that to
/// its heap-type base, i.e. to us) and what the `Handle` value references.
unsafe extern "C" fn traverse(
    obj: *mut ffi::PyObject,
    visit: ffi::visitproc,
    arg: *mut std::ffi::c_void,
) -> std::ffi::c_int {
    // SAFETY: the collector calls tp_traverse attached, with the GIL held,
    // on a live object of a handle type or a Python subclass of one; the
    // visits only read references. No Python API is used but `visit`.
    unsafe {
        let ret = visit(ffi::Py_TYPE(obj).cast(), arg);
        if ret != 0 {
            return ret;
        }
        let py = Python::assume_attached();
        let handle: &Handle = pyo3::Borrowed::from_ptr(py, obj)
            .cast_unchecked::<Handle>()
            .get();
        handle.visit_contents(|p| visit(p, arg))
    }
}
