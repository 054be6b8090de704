//! [`AuthStore`] in process memory: the default, for one vmcp instance.
//!
//! One mutex over plain maps; no await happens under it. Expired entries are swept at most
//! every `SWEEP_EVERY` (30) seconds and whenever a map is full, so the maps hold at most their
//! bound of live entries plus what expired since the last sweep. Used codes are remembered
//! (for replay detection) for `used_code_ttl` and count against `max_codes`; each family
//! remembers its last [`RETIRED_PER_FAMILY`] rotated-away token hashes (reuse detection).

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::Duration;

use futures::future::BoxFuture;

use super::clients::{ClientRecord, ClientSource};
use super::oauth::{now_secs, random_token};
use super::settings::Bounds;
use super::store::{
    AuthStore, CodeRecord, CodeTake, PendingAuthorization, RefreshFamily, Rotation, StoreError,
};

/// Seconds between two sweeps of expired entries.
const SWEEP_EVERY: u64 = 30;
/// Rotated-away refresh-token hashes kept per family for reuse detection.
pub const RETIRED_PER_FAMILY: usize = 16;

enum CodeEntry {
    Live(Box<CodeRecord>),
    Used { family_id: String, forget_at: u64 },
}

struct Family {
    record: RefreshFamily,
    retired: VecDeque<String>,
}

struct Client {
    record: ClientRecord,
    last_used: u64,
}

#[derive(Default)]
struct Inner {
    clients: HashMap<String, Client>,
    pending: HashMap<String, PendingAuthorization>,
    codes: HashMap<String, CodeEntry>,
    families: HashMap<String, Family>,
    /// Refresh-token hash (current or retired) → family id.
    tokens: HashMap<String, String>,
    /// (upstream, subject) → (user id, last seen).
    users: HashMap<(String, String), (String, u64)>,
    last_sweep: u64,
}

/// The in-memory store.
pub struct MemoryAuthStore {
    inner: Mutex<Inner>,
    bounds: Bounds,
}

impl MemoryAuthStore {
    /// A store with these bounds (see [`Bounds`] for each default).
    pub fn new(bounds: &Bounds) -> Self {
        Self { inner: Mutex::new(Inner::default()), bounds: bounds.clone() }
    }

    fn with<T>(&self, f: impl FnOnce(&mut Inner, u64) -> T) -> T {
        let now = now_secs();
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if now >= inner.last_sweep + SWEEP_EVERY {
            inner.sweep(now, secs(self.bounds.client_idle_ttl));
        }
        f(&mut inner, now)
    }

    fn done<T: Send + 'static>(value: T) -> BoxFuture<'static, T> {
        Box::pin(std::future::ready(value))
    }
}

impl Default for MemoryAuthStore {
    fn default() -> Self {
        Self::new(&Bounds::default())
    }
}

fn secs(d: Duration) -> u64 {
    d.as_secs()
}

impl Inner {
    fn sweep(&mut self, now: u64, client_idle: u64) {
        self.last_sweep = now;
        self.clients.retain(|_, c| c.last_used + client_idle > now);
        self.pending.retain(|_, p| p.expires_at > now);
        self.codes.retain(|_, c| match c {
            CodeEntry::Live(r) => r.expires_at > now,
            CodeEntry::Used { forget_at, .. } => *forget_at > now,
        });
        let dead: Vec<String> = self
            .families
            .iter()
            .filter(|(_, f)| f.record.expires_at <= now)
            .map(|(id, _)| id.clone())
            .collect();
        for id in dead {
            self.drop_family(&id);
        }
    }

    fn drop_family(&mut self, family_id: &str) {
        if let Some(f) = self.families.remove(family_id) {
            self.tokens.remove(&f.record.current_hash);
            for h in f.retired {
                self.tokens.remove(&h);
            }
        }
    }

    /// Makes room for one more registered client, or says there is none.
    fn client_room(&mut self, bounds: &Bounds, now: u64) -> Result<(), StoreError> {
        if self.clients.len() < bounds.max_clients {
            return Ok(());
        }
        self.sweep(now, secs(bounds.client_idle_ttl));
        if self.clients.len() < bounds.max_clients {
            return Ok(());
        }
        let min_age = secs(bounds.min_client_age);
        let victim = self
            .clients
            .iter()
            .filter(|(_, c)| c.record.source == ClientSource::Registered)
            .filter(|(_, c)| c.record.issued_at + min_age <= now)
            .min_by_key(|(_, c)| c.last_used)
            .map(|(id, _)| id.clone());
        match victim {
            Some(id) => {
                self.clients.remove(&id);
                Ok(())
            }
            None => Err(StoreError::Capacity("registered clients")),
        }
    }
}

impl AuthStore for MemoryAuthStore {
    fn put_client(&self, client: ClientRecord) -> BoxFuture<'_, Result<(), StoreError>> {
        let r = self.with(|inner, now| {
            if !inner.clients.contains_key(&client.client_id) {
                inner.client_room(&self.bounds, now)?;
            }
            inner
                .clients
                .insert(client.client_id.clone(), Client { record: client, last_used: now });
            Ok(())
        });
        Self::done(r)
    }

    fn client<'a>(
        &'a self,
        client_id: &'a str,
    ) -> BoxFuture<'a, Result<Option<ClientRecord>, StoreError>> {
        let idle = secs(self.bounds.client_idle_ttl);
        let r = self.with(|inner, now| {
            Ok(inner
                .clients
                .get(client_id)
                .filter(|c| c.last_used + idle > now)
                .map(|c| c.record.clone()))
        });
        Self::done(r)
    }

    fn touch_client<'a>(&'a self, client_id: &'a str) -> BoxFuture<'a, Result<(), StoreError>> {
        self.with(|inner, now| {
            if let Some(c) = inner.clients.get_mut(client_id) {
                c.last_used = now;
            }
        });
        Self::done(Ok(()))
    }

    fn put_pending(
        &self,
        state: String,
        pending: PendingAuthorization,
    ) -> BoxFuture<'_, Result<(), StoreError>> {
        let r = self.with(|inner, now| {
            if inner.pending.len() >= self.bounds.max_pending_authorizations {
                inner.sweep(now, secs(self.bounds.client_idle_ttl));
                if inner.pending.len() >= self.bounds.max_pending_authorizations {
                    return Err(StoreError::Capacity("pending authorizations"));
                }
            }
            inner.pending.insert(state, pending);
            Ok(())
        });
        Self::done(r)
    }

    fn take_pending<'a>(
        &'a self,
        state: &'a str,
    ) -> BoxFuture<'a, Result<Option<PendingAuthorization>, StoreError>> {
        let r =
            self.with(|inner, now| Ok(inner.pending.remove(state).filter(|p| p.expires_at > now)));
        Self::done(r)
    }

    fn put_code(
        &self,
        code_hash: String,
        code: CodeRecord,
    ) -> BoxFuture<'_, Result<(), StoreError>> {
        let r = self.with(|inner, now| {
            if inner.codes.len() >= self.bounds.max_codes {
                inner.sweep(now, secs(self.bounds.client_idle_ttl));
                if inner.codes.len() >= self.bounds.max_codes {
                    return Err(StoreError::Capacity("authorization codes"));
                }
            }
            inner.codes.insert(code_hash, CodeEntry::Live(Box::new(code)));
            Ok(())
        });
        Self::done(r)
    }

    fn take_code<'a>(&'a self, code_hash: &'a str) -> BoxFuture<'a, Result<CodeTake, StoreError>> {
        let forget = secs(self.bounds.used_code_ttl);
        let r = self.with(|inner, now| {
            let Some(entry) = inner.codes.get_mut(code_hash) else { return Ok(CodeTake::Unknown) };
            match entry {
                CodeEntry::Used { family_id, forget_at } if *forget_at > now => {
                    Ok(CodeTake::Replayed { family_id: family_id.clone() })
                }
                CodeEntry::Live(r) if r.expires_at > now => {
                    let used = CodeEntry::Used {
                        family_id: r.family_id.clone(),
                        forget_at: now + forget.max(r.expires_at.saturating_sub(now)),
                    };
                    let CodeEntry::Live(record) = std::mem::replace(entry, used) else {
                        return Ok(CodeTake::Unknown);
                    };
                    Ok(CodeTake::Fresh(record))
                }
                _ => {
                    inner.codes.remove(code_hash);
                    Ok(CodeTake::Unknown)
                }
            }
        });
        Self::done(r)
    }

    fn put_family(&self, family: RefreshFamily) -> BoxFuture<'_, Result<(), StoreError>> {
        let r = self.with(|inner, now| {
            if inner.families.len() >= self.bounds.max_refresh_families {
                inner.sweep(now, secs(self.bounds.client_idle_ttl));
                if inner.families.len() >= self.bounds.max_refresh_families {
                    return Err(StoreError::Capacity("refresh token families"));
                }
            }
            inner.drop_family(&family.family_id);
            inner.tokens.insert(family.current_hash.clone(), family.family_id.clone());
            inner.families.insert(
                family.family_id.clone(),
                Family { record: family, retired: VecDeque::new() },
            );
            Ok(())
        });
        Self::done(r)
    }

    fn family_by_token<'a>(
        &'a self,
        token_hash: &'a str,
    ) -> BoxFuture<'a, Result<Option<RefreshFamily>, StoreError>> {
        let r = self.with(|inner, now| {
            let family = inner.tokens.get(token_hash).and_then(|id| inner.families.get(id));
            Ok(family
                .filter(|f| f.record.current_hash == token_hash && f.record.expires_at > now)
                .map(|f| f.record.clone()))
        });
        Self::done(r)
    }

    fn rotate_refresh<'a>(
        &'a self,
        presented_hash: &'a str,
        client_id: &'a str,
        next_hash: String,
        next_expires_at: u64,
    ) -> BoxFuture<'a, Result<Rotation, StoreError>> {
        let r = self.with(|inner, now| {
            let Some(family_id) = inner.tokens.get(presented_hash).cloned() else {
                return Ok(Rotation::Invalid);
            };
            let Some(family) = inner.families.get_mut(&family_id) else {
                inner.tokens.remove(presented_hash);
                return Ok(Rotation::Invalid);
            };
            if family.record.current_hash != presented_hash {
                inner.drop_family(&family_id);
                return Ok(Rotation::Reused { family_id });
            }
            if family.record.client_id != client_id || family.record.expires_at <= now {
                return Ok(Rotation::Invalid);
            }
            let old = std::mem::replace(&mut family.record.current_hash, next_hash.clone());
            family.record.expires_at = next_expires_at;
            family.retired.push_back(old);
            let forgotten =
                (family.retired.len() > RETIRED_PER_FAMILY).then(|| family.retired.pop_front());
            let record = family.record.clone();
            if let Some(Some(h)) = forgotten {
                inner.tokens.remove(&h);
            }
            inner.tokens.insert(next_hash, family_id);
            Ok(Rotation::Rotated(record))
        });
        Self::done(r)
    }

    fn revoke_family<'a>(&'a self, family_id: &'a str) -> BoxFuture<'a, Result<(), StoreError>> {
        self.with(|inner, _| inner.drop_family(family_id));
        Self::done(Ok(()))
    }

    fn user_id<'a>(
        &'a self,
        upstream: &'a str,
        subject: &'a str,
    ) -> BoxFuture<'a, Result<String, StoreError>> {
        let r = self.with(|inner, now| {
            let key = (upstream.to_string(), subject.to_string());
            if let Some((id, seen)) = inner.users.get_mut(&key) {
                *seen = now;
                return Ok(id.clone());
            }
            if inner.users.len() >= self.bounds.max_users {
                let oldest =
                    inner.users.iter().min_by_key(|(_, (_, seen))| *seen).map(|(k, _)| k.clone());
                if let Some(k) = oldest {
                    inner.users.remove(&k);
                }
            }
            let id = new_uuid();
            inner.users.insert(key, (id.clone(), now));
            Ok(id)
        });
        Self::done(r)
    }
}

/// A random UUID (version 4), as ToolHive's user ids are.
pub fn new_uuid() -> String {
    use rand::RngCore as _;
    let mut b = [0u8; 16];
    rand::rng().fill_bytes(&mut b);
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!("{}-{}-{}-{}-{}", &h[0..8], &h[8..12], &h[12..16], &h[16..20], &h[20..32])
}

/// A family id (random, not a secret).
pub fn new_family_id() -> String {
    random_token()
}

#[cfg(test)]
#[path = "memory_tests.rs"]
mod tests;
