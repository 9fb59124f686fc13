//! One grant of one connection: its cached token and how it is refreshed.
//!
//! A token due for refresh (`refresh_ahead_secs` before expiry) is still
//! handed out while one background refresh runs, until [`STALE_MARGIN`]
//! before it expires; only an expired, missing or rejected (401) token
//! makes callers wait.
//!
//! A refresh is single-flight twice over: callers in this process queue on
//! one async mutex, and the refresher then takes the record's lock in the
//! token store, so hosts sharing the store refresh one at a time. After
//! taking each, the cache and then the stored record are read again: a
//! token someone else just obtained is adopted, not refreshed again (which
//! with rotating refresh tokens would burn the family). A rotated refresh
//! token is stored before the new access token is used. A dead grant
//! (`invalid_grant`) is marked "needs re-authorisation" only if the stored
//! refresh token is still the one that was refused, and the stored tokens
//! are kept, never deleted.

use crate::client::{self, Answer, Issued};
use crate::{Record, Shared, Status, unix_ms};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use switchyard_broker::egress::Egress;
use switchyard_broker::oauth::{GrantType, LiveValues, OAuthGrant, TokenError};
use switchyard_broker::secrets::SecretValue;

/// How long a refresher holds the store's lock at most: well over
/// [`REQUEST_LIMIT`], so a lock never runs out under a live request (two
/// refreshes with one rotating refresh token can revoke the whole grant).
const LOCK_TTL: Duration = Duration::from_secs(60);
/// The longest a token request may take.
const REQUEST_LIMIT: Duration = Duration::from_secs(20);
/// After a failed token request, calls fail fast this long instead of
/// queueing one request each behind the failing server.
const FAILURE_PAUSE: Duration = Duration::from_secs(5);
/// After a client-credentials grant's client was refused, this long.
const DEAD_CLIENT_PAUSE: Duration = Duration::from_secs(60);
/// The least time between two refreshes forced by a 401.
pub(crate) const FORCED_REFRESH_GAP: Duration = Duration::from_secs(2);
/// How long a caller waits for another host's refresh to land.
const LOCK_WAIT: Duration = Duration::from_secs(20);
/// A token due for refresh is still handed out, while a refresh runs in
/// the background, until this long before it expires; after that callers
/// wait for the new one.
const STALE_MARGIN: Duration = Duration::from_secs(5);
/// The lifetime assumed when the server gives no `expires_in`.
const ASSUMED_LIFETIME: Duration = Duration::from_secs(3600);

/// A token in memory, with when to refresh it.
#[derive(Clone)]
struct Cached {
    token: SecretValue,
    refresh_at_ms: u64,
    expires_at_ms: u64,
}

pub(crate) struct Grant {
    /// `connection/grant`: the record's name in the store.
    pub(crate) key: String,
    pub(crate) connection: String,
    pub(crate) name: String,
    pub(crate) config: OAuthGrant,
    pub(crate) client_secret: SecretValue,
    pub(crate) egress: Egress,
    pub(crate) live: Arc<LiveValues>,
    pub(crate) shared: Arc<Shared>,
    cached: Mutex<Option<Cached>>,
    /// The refresh queue of this record, shared by every generation of the
    /// grant (a reload builds a new `Grant` while old calls still run).
    flight: Arc<tokio::sync::Mutex<()>>,
    /// When a 401 last forced a refresh: at most one per
    /// [`FORCED_REFRESH_GAP`], so a guest cannot make every request cost a
    /// token request (and a refresh-token rotation).
    forced_at: Mutex<Option<Instant>>,
    /// Whether this host last saw the grant dead, so adopting a
    /// reconnected record reports it connected.
    seen_dead: std::sync::atomic::AtomicBool,
    /// Whether a background refresh (of a token due but not expired) is
    /// under way, so calls in the meantime start no other.
    refreshing: Arc<std::sync::atomic::AtomicBool>,
    /// Until when, and with what error, token requests are paused after a
    /// failure.
    failed: Mutex<Option<(Instant, TokenError)>>,
}

impl std::fmt::Debug for Grant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Grant")
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

impl Grant {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        connection: &str,
        name: &str,
        config: OAuthGrant,
        client_secret: SecretValue,
        egress: Egress,
        live: Arc<LiveValues>,
        shared: Arc<Shared>,
        flight: Arc<tokio::sync::Mutex<()>>,
    ) -> Self {
        live.set(&format!("{name}/client_secret"), &client_secret);
        Grant {
            key: format!("{connection}/{name}"),
            connection: connection.to_owned(),
            name: name.to_owned(),
            config,
            client_secret,
            egress,
            live,
            shared,
            cached: Mutex::default(),
            flight,
            forced_at: Mutex::default(),
            seen_dead: std::sync::atomic::AtomicBool::new(false),
            refreshing: Arc::default(),
            failed: Mutex::default(),
        }
    }

    fn needs_reauthorization(&self, reason: &str) -> TokenError {
        TokenError::NeedsReauthorization {
            connection: self.connection.clone(),
            grant: self.name.clone(),
            reason: reason.to_owned(),
        }
    }

    fn unavailable(&self, reason: impl Into<String>) -> TokenError {
        TokenError::Unavailable {
            grant: self.name.clone(),
            reason: reason.into(),
        }
    }

    /// The cached token if it is not due for refresh and is not `rejected`.
    fn fresh(&self, rejected: Option<&SecretValue>) -> Option<SecretValue> {
        let cached = self.cached.lock().unwrap_or_else(|p| p.into_inner());
        let cached = cached.as_ref()?;
        let refused = rejected.is_some_and(|r| r.expose() == cached.token.expose());
        (unix_ms() < cached.refresh_at_ms && !refused).then(|| cached.token.clone())
    }

    /// The cached token while it has not expired (it may be due for
    /// refresh): what a failed refresh falls back on.
    fn unexpired(&self, rejected: Option<&SecretValue>) -> Option<SecretValue> {
        self.valid_for(Duration::from_secs(1), rejected)
    }

    /// The cached token if it is valid `margin` from now and not
    /// `rejected`.
    fn valid_for(&self, margin: Duration, rejected: Option<&SecretValue>) -> Option<SecretValue> {
        let cached = self.cached.lock().unwrap_or_else(|p| p.into_inner());
        let cached = cached.as_ref()?;
        let refused = rejected.is_some_and(|r| r.expose() == cached.token.expose());
        (unix_ms() + margin.as_millis() as u64 <= cached.expires_at_ms && !refused)
            .then(|| cached.token.clone())
    }

    /// Starts a refresh in the background unless one is under way.
    fn refresh_in_background(self: &Arc<Self>) {
        use std::sync::atomic::Ordering;
        if self.refreshing.swap(true, Ordering::AcqRel) {
            return;
        }
        /// Clears the flag however the task ends (a panic included), so a
        /// later refresh ahead of expiry runs in the background again.
        struct Clear(Arc<std::sync::atomic::AtomicBool>);
        impl Drop for Clear {
            fn drop(&mut self) {
                self.0.store(false, Ordering::Release);
            }
        }
        let clear = Clear(self.refreshing.clone());
        let grant = Arc::clone(self);
        self.shared.spawn_refresh(async move {
            let _clear = clear;
            if let Err(e) = grant.refresh_queued(None).await {
                tracing::warn!(grant = %grant.key, error = %e, "background token refresh failed; calls use the current token until it expires");
            }
        });
    }

    /// Makes `access` and `refresh` the grant's current values for
    /// redaction (the ones they replace stay redacted a while).
    fn remember(&self, access: &SecretValue, refresh: Option<&[u8]>) {
        self.live.set(&format!("{}/access", self.name), access);
        if let Some(refresh) = refresh {
            let refresh = SecretValue::new(refresh.to_vec());
            self.live.set(&format!("{}/refresh", self.name), &refresh);
        }
    }

    /// The refresh queue, for the grant's next generation.
    pub(crate) fn flight(&self) -> Arc<tokio::sync::Mutex<()>> {
        self.flight.clone()
    }

    /// The in-process refresh queue, for a connect that replaces tokens.
    pub(crate) async fn flight_lock(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.flight.lock().await
    }

    pub(crate) fn forget(&self) {
        *self.cached.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }

    /// Caches the record's access token if it has one and is connected;
    /// returns it if it is fresh and not `rejected`.
    fn adopt(&self, record: &Record, rejected: Option<&SecretValue>) -> Option<SecretValue> {
        if record.status != Status::Connected {
            return None;
        }
        let token = SecretValue::new(record.access_token.clone()?.into_bytes());
        if rejected.is_some_and(|r| r.expose() == token.expose()) {
            return None;
        }
        self.remember(&token, record.refresh_token.as_deref().map(str::as_bytes));
        if self
            .seen_dead
            .swap(false, std::sync::atomic::Ordering::Relaxed)
        {
            self.shared.observer_connected(self);
        }
        let expires_at_ms = record.expires_at_ms.unwrap_or(0);
        let lifetime = expires_at_ms.saturating_sub(record.obtained_at_ms);
        let cached = Cached {
            token: token.clone(),
            refresh_at_ms: self.refresh_at(record.obtained_at_ms, lifetime),
            expires_at_ms,
        };
        if unix_ms() >= cached.refresh_at_ms {
            return None;
        }
        *self.cached.lock().unwrap_or_else(|p| p.into_inner()) = Some(cached);
        Some(token)
    }

    /// When a token obtained at `obtained_ms`, living `lifetime_ms`, is
    /// refreshed: `refresh_ahead_secs` early (at most half the lifetime),
    /// less up to a tenth of that at random.
    fn refresh_at(&self, obtained_ms: u64, lifetime_ms: u64) -> u64 {
        let ahead = (self.config.refresh_ahead_secs * 1000).min(lifetime_ms / 2);
        let jitter = fastrand::u64(0..=ahead / 10);
        (obtained_ms + lifetime_ms).saturating_sub(ahead + jitter)
    }

    /// A current access token; see the module docs for the order of
    /// checks. The refresh runs in a task of its own, so a caller that
    /// goes away (a guest dropping its request, a timeout) cannot cut it
    /// off between the server rotating the refresh token and the host
    /// storing the new one.
    pub(crate) async fn access_token(
        self: &Arc<Self>,
        rejected: Option<&SecretValue>,
    ) -> Result<SecretValue, TokenError> {
        if let Some(token) = self.fresh(rejected) {
            return Ok(token);
        }
        // Due for refresh but good a while yet: no caller waits for it.
        if rejected.is_none()
            && let Some(token) = self.valid_for(STALE_MARGIN, None)
        {
            if self.paused(None).is_none() {
                self.refresh_in_background();
            }
            return Ok(token);
        }
        if let Some(answer) = self.paused(rejected) {
            return answer;
        }
        let mut rejected = rejected.cloned();
        if rejected.is_some() && !self.may_force_refresh() {
            // A refresh was forced a moment ago: try what we have.
            rejected = None;
            if let Some(token) = self.unexpired(None) {
                return Ok(token);
            }
        }
        let grant = Arc::clone(self);
        let refresh = (self.shared)
            .spawn_refresh(async move { grant.refresh_queued(rejected.as_ref()).await });
        refresh
            .await
            .unwrap_or_else(|e| Err(self.unavailable(format!("the refresh task failed: {e}"))))
    }

    /// Whether a 401 may force a refresh now (see [`FORCED_REFRESH_GAP`]);
    /// if so, the gap starts.
    fn may_force_refresh(&self) -> bool {
        let mut forced = self.forced_at.lock().unwrap_or_else(|p| p.into_inner());
        if forced.is_some_and(|at| at.elapsed() < FORCED_REFRESH_GAP) {
            return false;
        }
        *forced = Some(Instant::now());
        true
    }

    /// Queued behind other callers of this record: adopt, or refresh under
    /// the store's lock.
    async fn refresh_queued(
        &self,
        rejected: Option<&SecretValue>,
    ) -> Result<SecretValue, TokenError> {
        let _flight = self.flight.lock().await;
        if let Some(token) = self.fresh(rejected) {
            return Ok(token);
        }
        if let Some(answer) = self.paused(rejected) {
            return answer;
        }
        let store = &self.shared.store;
        let holder = &self.shared.holder;
        let waited = Instant::now();
        loop {
            match store.lock(&self.key, holder, LOCK_TTL).await {
                Ok(true) => break,
                Ok(false) => {}
                Err(e) => return Err(self.unavailable(e.to_string())),
            }
            // Another host is refreshing: take its token once stored.
            if let Ok(Some((record, _))) = self.shared.load(&self.key).await
                && let Some(token) = self.adopt(&record, rejected)
            {
                return Ok(token);
            }
            if waited.elapsed() > LOCK_WAIT {
                return Err(self.unavailable("another host has held the refresh lock too long"));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let result = self.refresh_locked(rejected).await;
        if let Err(e) = store.unlock(&self.key, holder).await {
            tracing::warn!(grant = %self.key, error = %e, "could not release the refresh lock");
        }
        result
    }

    /// While requests are paused after a failure: the unexpired cached
    /// token, or the failure again; `None` when not paused.
    fn paused(&self, rejected: Option<&SecretValue>) -> Option<Result<SecretValue, TokenError>> {
        let failed = self.failed.lock().unwrap_or_else(|p| p.into_inner());
        let (until, error) = failed.as_ref()?;
        if Instant::now() >= *until {
            return None;
        }
        let error = error.clone();
        drop(failed);
        Some(self.unexpired(rejected).ok_or(error))
    }

    /// Under the store's lock: adopt the stored token, or refresh.
    async fn refresh_locked(
        &self,
        rejected: Option<&SecretValue>,
    ) -> Result<SecretValue, TokenError> {
        let stored = self
            .shared
            .load(&self.key)
            .await
            .map_err(|e| self.unavailable(e))?;
        let (record, revision) = match stored {
            Some((record, revision)) => (record, Some(revision)),
            None => (Record::default(), None),
        };
        if let Some(token) = self.adopt(&record, rejected) {
            return Ok(token);
        }
        // Only an operator's connect revives an authorization-code grant; a
        // client-credentials one is asked again after a pause (its secret
        // may have been fixed).
        if record.status == Status::NeedsReauthorization
            && self.config.grant_type == GrantType::AuthorizationCode
        {
            self.forget();
            self.seen_dead
                .store(true, std::sync::atomic::Ordering::Relaxed);
            return Err(self.needs_reauthorization(record.reason.as_deref().unwrap_or("")));
        }
        let used_refresh = match self.config.grant_type {
            GrantType::ClientCredentials => None,
            GrantType::AuthorizationCode => match &record.refresh_token {
                Some(token) => Some(SecretValue::new(token.clone().into_bytes())),
                None if record.status == Status::Connected => {
                    // Connected once, but the server gave no refresh token
                    // (some do not on a repeat consent): once the access
                    // token is gone, so is the grant.
                    let reason = "the access token expired and the server gave no refresh token";
                    self.mark_dead(reason, None).await;
                    return Err(self.needs_reauthorization(reason));
                }
                None => {
                    return Err(self.needs_reauthorization("no account is connected yet"));
                }
            },
        };
        let answer = tokio::time::timeout(
            REQUEST_LIMIT,
            client::request_token(self, used_refresh.as_ref()),
        )
        .await
        .unwrap_or_else(|_| {
            Answer::Failed(format!("no answer within {} s", REQUEST_LIMIT.as_secs()))
        });
        let failed = match &answer {
            Answer::Failed(reason) => Some((
                Instant::now() + FAILURE_PAUSE,
                self.unavailable(format!(
                    "{} (asked again in {} s)",
                    self.redact(reason),
                    FAILURE_PAUSE.as_secs()
                )),
            )),
            Answer::Dead(reason) if self.config.grant_type == GrantType::ClientCredentials => {
                Some((
                    Instant::now() + DEAD_CLIENT_PAUSE,
                    TokenError::ClientRefused {
                        grant: self.name.clone(),
                        reason: self.redact(reason),
                    },
                ))
            }
            _ => None,
        };
        *self.failed.lock().unwrap_or_else(|p| p.into_inner()) = failed;
        match answer {
            Answer::Issued(issued) => self.store_issued(record, revision, issued, false).await,
            Answer::Dead(reason) => {
                self.mark_dead(&reason, used_refresh.as_ref()).await;
                Err(match self.config.grant_type {
                    GrantType::AuthorizationCode => {
                        self.needs_reauthorization(&self.redact(&reason))
                    }
                    GrantType::ClientCredentials => TokenError::ClientRefused {
                        grant: self.name.clone(),
                        reason: self.redact(&reason),
                    },
                })
            }
            Answer::Failed(reason) => {
                tracing::warn!(grant = %self.key, reason = %self.redact(&reason), "token request failed");
                self.unexpired(rejected)
                    .ok_or_else(|| self.unavailable(self.redact(&reason)))
            }
        }
    }

    pub(crate) fn redact(&self, text: &str) -> String {
        switchyard_broker::secrets::Redactor::default()
            .with_live(self.live.clone())
            .redact(text)
            .into_owned()
    }

    /// Stores what the server issued (a rotated refresh token first of
    /// all), then caches and returns the access token.
    /// `connecting`: the tokens come from an operator's connect, which must
    /// win; losing the swap is then an error, never another record adopted.
    pub(crate) async fn store_issued(
        &self,
        old: Record,
        revision: Option<u64>,
        issued: Issued,
        connecting: bool,
    ) -> Result<SecretValue, TokenError> {
        self.remember(&issued.access, issued.refresh.as_ref().map(|r| r.expose()));
        let now = unix_ms();
        let lifetime = issued.expires_in.unwrap_or(ASSUMED_LIFETIME);
        let text = |v: &SecretValue| String::from_utf8_lossy(v.expose()).into_owned();
        let record = Record {
            access_token: Some(text(&issued.access)),
            refresh_token: issued
                .refresh
                .as_ref()
                .map(text)
                .or(old.refresh_token.clone()),
            expires_at_ms: Some(now + lifetime.as_millis() as u64),
            obtained_at_ms: now,
            scope: issued.scope.clone().or(old.scope.clone()),
            status: Status::Connected,
            reason: None,
        };
        match self.shared.save(&self.key, &record, revision).await {
            Ok(Some(_)) => {}
            Ok(None) => {
                // Only a lock holder writes; losing the swap means the lock
                // ran out under us. The other writer's record stands.
                tracing::warn!(grant = %self.key, "the stored record changed under a refresh; keeping the newer one");
                if connecting {
                    return Err(self
                        .unavailable("the stored record changed while connecting; connect again"));
                }
                if let Ok(Some((current, _))) = self.shared.load(&self.key).await
                    && let Some(token) = self.adopt(&current, None)
                {
                    return Ok(token);
                }
                return Err(self.unavailable("the stored token changed during a refresh"));
            }
            Err(e) => {
                // Not stored, so not used: a rotated refresh token we could
                // not keep must not be the only copy.
                return Err(self.unavailable(format!("could not store the new token: {e}")));
            }
        }
        *self.failed.lock().unwrap_or_else(|p| p.into_inner()) = None;
        if old.status != Status::Connected {
            self.shared.observer_connected(self);
        }
        self.adopt(&record, None)
            .or_else(|| Some(issued.access.clone()))
            .ok_or_else(|| self.unavailable("no token"))
    }

    /// Marks the grant dead, unless the stored refresh token changed since
    /// `used` was read (then someone else rotated it: not dead).
    async fn mark_dead(&self, reason: &str, used: Option<&SecretValue>) {
        self.forget();
        // The server's words, which could quote what it was sent.
        let reason = &self.redact(reason);
        for _ in 0..3 {
            let Ok(stored) = self.shared.load(&self.key).await else {
                return;
            };
            let (mut record, revision) = match stored {
                Some((record, revision)) => (record, Some(revision)),
                None => (Record::default(), None),
            };
            let current = record.refresh_token.as_deref().map(str::as_bytes);
            if used.map(|u| u.expose()) != current {
                return;
            }
            record.status = Status::NeedsReauthorization;
            record.reason = Some(reason.to_owned());
            if let Ok(Some(_)) = self.shared.save(&self.key, &record, revision).await {
                self.seen_dead
                    .store(true, std::sync::atomic::Ordering::Relaxed);
                tracing::error!(connection = %self.connection, grant = %self.name, reason, "oauth grant needs re-authorisation");
                self.shared.observer_dead(self, reason);
                return;
            }
        }
    }

    /// Reports a token request to the observer.
    pub(crate) fn observe_request(&self, kind: &str, answer: &Answer, elapsed: Duration) {
        let outcome = match answer {
            Answer::Issued(_) => "ok",
            Answer::Dead(_) => "dead",
            Answer::Failed(_) => "failed",
        };
        if let Some(observer) = &self.shared.observer {
            observer.token_request(&self.connection, &self.name, kind, outcome, elapsed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::seal::SealKey;
    use crate::store::SqliteTokenStore;
    use switchyard_broker::egress::Network;

    fn grant(dir: &std::path::Path) -> Grant {
        let config: OAuthGrant = toml_grant();
        let shared = Arc::new(Shared {
            store: Arc::new(SqliteTokenStore::open(&dir.join("oauth.sqlite")).unwrap()),
            key: SealKey::from_bytes(&[3; 32]).unwrap(),
            holder: "test".into(),
            observer: None,
            refreshes: Arc::default(),
        });
        let limits = crate::tests::test_limits();
        let egress = Egress::for_host(
            "t",
            &["https://login.test".into()],
            limits,
            Network::default(),
        )
        .unwrap();
        Grant::new(
            "c",
            "g",
            config,
            SecretValue::new(b"client-secret".to_vec()),
            egress,
            Arc::default(),
            shared,
            Arc::default(),
        )
    }

    fn toml_grant() -> OAuthGrant {
        OAuthGrant {
            grant_type: GrantType::AuthorizationCode,
            token_url: "https://login.test/token".into(),
            authorize_url: Some("https://login.test/auth".into()),
            client_id: "c".into(),
            client_secret: Default::default(),
            client_auth: Default::default(),
            scopes: Vec::new(),
            extra_params: Default::default(),
            destinations: Vec::new(),
            refresh_ahead_secs: 300,
        }
    }

    fn record(refresh: &str) -> Record {
        Record {
            access_token: Some(format!("access-for-{refresh}")),
            refresh_token: Some(refresh.into()),
            expires_at_ms: Some(unix_ms() + 3_600_000),
            obtained_at_ms: unix_ms(),
            scope: None,
            status: Status::Connected,
            reason: None,
        }
    }

    #[tokio::test]
    async fn a_losing_racer_neither_marks_nor_deletes_the_winners_tokens() {
        let dir = tempfile::tempdir().unwrap();
        let grant = grant(dir.path());
        // The winner rotated rt-1 into rt-2 and stored it; the loser's
        // refresh with rt-1 came back invalid_grant.
        grant
            .shared
            .save(&grant.key, &record("rt-2"), None)
            .await
            .unwrap();
        let used = SecretValue::new(b"rt-1".to_vec());
        grant.mark_dead("invalid_grant", Some(&used)).await;
        let (stored, _) = grant.shared.load(&grant.key).await.unwrap().unwrap();
        assert_eq!(stored.status, Status::Connected);
        assert_eq!(stored.refresh_token.as_deref(), Some("rt-2"));
        // The same refusal of the stored token marks it, keeping the tokens.
        let used = SecretValue::new(b"rt-2".to_vec());
        grant.mark_dead("invalid_grant", Some(&used)).await;
        let (stored, _) = grant.shared.load(&grant.key).await.unwrap().unwrap();
        assert_eq!(stored.status, Status::NeedsReauthorization);
        assert_eq!(stored.refresh_token.as_deref(), Some("rt-2"));
        assert_eq!(stored.reason.as_deref(), Some("invalid_grant"));
    }

    #[test]
    fn refreshes_come_ahead_of_expiry_within_half_the_lifetime() {
        let dir = tempfile::tempdir().unwrap();
        let grant = grant(dir.path());
        for _ in 0..100 {
            // 30 s token: half of it (15 s) ahead, less up to 1.5 s.
            let at = grant.refresh_at(1_000_000, 30_000);
            assert!((1_013_500..=1_015_000).contains(&at), "{at}");
            // 1 h token: 300 s ahead, less up to 30 s.
            let at = grant.refresh_at(0, 3_600_000);
            assert!((3_270_000..=3_300_000).contains(&at), "{at}");
        }
    }
}
