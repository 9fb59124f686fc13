//! `switchyard:connector/secrets`: secrets by name, never by value.

use crate::bindings::switchyard::connector::secrets::{self, SecretError};
use crate::observe::{BrokerUse, ObserveCtx};
use crate::secrets::{ConnectionSecrets, SecretError as HostSecretError};
use std::sync::Arc;
use wasmtime::component::{HasData, Linker};

/// The secrets of one connection. Default: none granted.
#[derive(Debug, Clone, Default)]
pub struct SecretsCtx {
    pub(crate) connection: Arc<str>,
    pub(crate) secrets: Arc<ConnectionSecrets>,
    /// Where signing and verifying are reported.
    pub(crate) observe: ObserveCtx,
}

/// Borrowed view handed to the generated `Host` impl.
#[derive(Debug)]
pub struct SecretsCtxView<'a> {
    pub ctx: &'a SecretsCtx,
}

/// Implemented by store data that offers `secrets`.
pub trait SecretsView: Send {
    fn secrets(&mut self) -> SecretsCtxView<'_>;
}

impl SecretsCtxView<'_> {
    fn guest_error(&self, err: HostSecretError) -> SecretError {
        match err {
            HostSecretError::NotGranted(name) => SecretError::NotGranted(format!(
                "no secret `{name}` is granted to connection `{conn}`; add [connections.{conn}.grants.secrets.{name}] and list `{name}` in the plugin manifest's `secrets`",
                conn = self.ctx.connection
            )),
            other => SecretError::Unavailable(other.to_string()),
        }
    }

    /// Reports a use of `name` that found the secret.
    fn used<T>(&self, name: &str, purpose: &str, result: &Result<T, HostSecretError>) {
        if result.is_ok() {
            self.ctx.observe.broker(BrokerUse::Secret {
                name,
                purpose,
                destination: None,
            });
        }
    }
}

impl secrets::Host for SecretsCtxView<'_> {
    async fn placeholder(&mut self, name: String) -> wasmtime::Result<Result<String, SecretError>> {
        Ok(self
            .ctx
            .secrets
            .placeholder(&name)
            .map_err(|e| self.guest_error(e)))
    }

    async fn sign_hmac_sha256(
        &mut self,
        name: String,
        message: Vec<u8>,
    ) -> wasmtime::Result<Result<String, SecretError>> {
        let result = self.ctx.secrets.hmac_sha256(&name, &message);
        self.used(&name, "sign", &result);
        Ok(result.map_err(|e| self.guest_error(e)))
    }

    async fn verify_hmac_sha256(
        &mut self,
        name: String,
        message: Vec<u8>,
        signature_hex: String,
    ) -> wasmtime::Result<Result<bool, SecretError>> {
        let result = self
            .ctx
            .secrets
            .verify_hmac_sha256(&name, &message, &signature_hex);
        self.used(&name, "verify", &result);
        Ok(result.map_err(|e| self.guest_error(e)))
    }
}

struct HasSecrets;

impl HasData for HasSecrets {
    type Data<'a> = SecretsCtxView<'a>;
}

/// Adds `switchyard:connector/secrets` to `linker`.
pub fn add_to_linker<T: SecretsView + 'static>(linker: &mut Linker<T>) -> wasmtime::Result<()> {
    secrets::add_to_linker::<T, HasSecrets>(linker, T::secrets)
}
