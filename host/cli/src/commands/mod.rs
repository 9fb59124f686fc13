//! One module per subcommand.

pub mod audit;
pub mod build;
pub mod call;
pub mod dlq;
pub mod inspect;
pub mod key;
pub mod new;
pub mod oauth;
pub mod serve;
pub mod sign;

/// A multi-threaded tokio runtime for commands that call guests.
pub fn tokio() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}
