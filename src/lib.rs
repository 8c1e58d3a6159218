//! oxloop: a drop-in replacement for the asyncio event loop, in Rust.
//!
//! The native module `oxloop._core` holds the hot core (handles, ready queue,
//! timers, reactor); `python/oxloop` wraps it into an
//! `asyncio.AbstractEventLoop`. See DEVELOPERS.md for the design, and
//! [`portability`] for what free-threaded CPython (`gil_used = false`) and
//! Windows need.

pub mod contexts;
pub mod errors;
pub mod event_loop;
pub mod handles;
pub(crate) mod internal_call;
pub mod oscalls;
pub mod portability;
pub mod reactor;
pub mod server;
pub mod sockops;
pub mod transports;
pub mod udp;

use pyo3::prelude::*;

#[pymodule]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<event_loop::LoopCore>()?;
    event_loop::fastcall::install(m.py())?;
    m.add_class::<sockops::SockOps>()?;
    m.add_class::<sockops::SockCoro>()?;
    m.add_class::<udp::UdpTransport>()?;
    m.add_class::<handles::Handle>()?;
    m.add_class::<handles::TimerHandle>()?;
    m.add_class::<handles::ThreadSafeHandle>()?;
    handles::free_list::install(m.py());
    m.add_class::<transports::stream::StreamTransport>()?;
    m.add_class::<transports::pipe::PipeTransport>()?;
    m.add_class::<server::StreamListener>()?;
    oscalls::register(m)?;
    m.add_function(wrap_pyfunction!(event_loop::stats_api::_stats_enable, m)?)?;
    m.add_function(wrap_pyfunction!(event_loop::stats_api::_stats_reset, m)?)?;
    m.add_function(wrap_pyfunction!(
        event_loop::stats_api::_stats_set_blocking,
        m
    )?)?;
    m.add_function(wrap_pyfunction!(event_loop::stats_api::_stats_probe, m)?)?;
    m.add_function(wrap_pyfunction!(event_loop::stats_api::_stats_snapshot, m)?)?;
    Ok(())
}
