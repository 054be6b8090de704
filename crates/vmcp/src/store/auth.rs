//! [`AuthStore`] in Redis: the authorization server's state shared by replicas, with the memory
//! store's invariants (see `auth::server::store`):
//! - single use is atomic: a pending login and a code are taken by one Lua script each, a
//!   refresh token rotates by compare-and-swap in one script (a rotated-away token revokes its
//!   family); the [`RETIRED_PER_FAMILY`] last rotated-away hashes are remembered per family;
//! - everything expires with its record (`PX` from `expires_at`, a client after its idle TTL,
//!   a used code after `used_code_ttl`), and every count bound of [`Bounds`] holds across
//!   replicas (a sorted set per kind, pruned of what expired before each insert);
//! - codes and refresh tokens are stored only as their SHA-256 hashes; a pending login, which
//!   holds the upstream PKCE verifier, is sealed with the vault key (AES-256-GCM, bound to its
//!   `state`) before it leaves the process.

use futures::future::BoxFuture;

use super::auth_codec as codec;
use super::auth_lua as lua;
use super::{Redis, StorageError, part};
use crate::auth::server::clients::ClientRecord;
use crate::auth::server::memory::{RETIRED_PER_FAMILY, new_uuid};
use crate::auth::server::oauth::now_secs;
use crate::auth::server::settings::Bounds;
use crate::auth::server::store::{
    AuthStore, CodeRecord, CodeTake, PendingAuthorization, RefreshFamily, Rotation, StoreError,
};
use crate::auth::upstream::VaultKey;

/// What sealed pending logins are bound to.
const PENDING_KIND: &str = "authserver-pending";

fn err(e: StorageError) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

struct Scripts {
    put_client: redis::Script,
    touch_client: redis::Script,
    put_bounded: redis::Script,
    take: redis::Script,
    take_code: redis::Script,
    put_family: redis::Script,
    revoke_family: redis::Script,
    rotate: redis::Script,
    user_id: redis::Script,
}

/// The authorization server's state in Redis.
pub struct RedisAuthStore {
    redis: Redis,
    bounds: Bounds,
    key: VaultKey,
    s: Scripts,
}

impl RedisAuthStore {
    /// A store in `redis` with these bounds, sealing pending logins with `key` (the vault key
    /// every replica shares).
    pub fn new(redis: Redis, bounds: &Bounds, key: VaultKey) -> Self {
        let s = Scripts {
            put_client: redis::Script::new(lua::PUT_CLIENT),
            touch_client: redis::Script::new(lua::TOUCH_CLIENT),
            put_bounded: redis::Script::new(lua::PUT_BOUNDED),
            take: redis::Script::new(lua::TAKE),
            take_code: redis::Script::new(lua::TAKE_CODE),
            put_family: redis::Script::new(&lua::put_family()),
            revoke_family: redis::Script::new(&lua::revoke_family()),
            rotate: redis::Script::new(&lua::rotate()),
            user_id: redis::Script::new(lua::USER_ID),
        };
        Self { redis, bounds: bounds.clone(), key, s }
    }

    fn k(&self, kind: &str, id: &str) -> String {
        self.redis.key(kind, &[id])
    }

    /// The prefix of keys of `kind` (`<prefix><kind>:`), for scripts that build keys.
    fn prefix(&self, kind: &str) -> String {
        format!("{}:", self.redis.key(kind, &[]))
    }

    fn idle(&self) -> u64 {
        self.bounds.client_idle_ttl.as_secs().max(1)
    }

    async fn eval<T: redis::FromRedisValue>(
        &self,
        script: &redis::Script,
        keys: &[String],
        args: &[Vec<u8>],
    ) -> Result<T, StoreError> {
        self.redis.eval::<T, Vec<u8>>(script, keys, args).await.map_err(err)
    }

    async fn family(&self, fid: &str) -> Result<Option<RefreshFamily>, StoreError> {
        let cmd = redis::cmd("HMGET")
            .arg(self.k("as:family", fid))
            .arg(&["rec", "cur", "exp"])
            .to_owned();
        let (rec, cur, exp): (Option<Vec<u8>>, Option<String>, Option<u64>) =
            self.redis.query(&cmd).await.map_err(err)?;
        Ok(match (rec, cur, exp) {
            (Some(rec), Some(cur), Some(exp)) => codec::decode_family(&rec, cur, exp),
            _ => None,
        })
    }
}

fn b(s: impl ToString) -> Vec<u8> {
    s.to_string().into_bytes()
}

impl AuthStore for RedisAuthStore {
    fn put_client(&self, client: ClientRecord) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(async move {
            let member = part(&client.client_id);
            let keys = [self.k("as:client", &client.client_id), self.redis.key("as:clients", &[])];
            let args = [
                codec::encode_client(&client),
                b(&member),
                b(now_secs()),
                b(self.idle()),
                b(self.bounds.max_clients),
                b(self.bounds.min_client_age.as_secs()),
                b(self.prefix("as:client")),
            ];
            match self.eval::<i64>(&self.s.put_client, &keys, &args).await? {
                1 => Ok(()),
                _ => Err(StoreError::Capacity("registered clients")),
            }
        })
    }

    fn client<'a>(
        &'a self,
        client_id: &'a str,
    ) -> BoxFuture<'a, Result<Option<ClientRecord>, StoreError>> {
        Box::pin(async move {
            let cmd = redis::cmd("GET").arg(self.k("as:client", client_id)).to_owned();
            let v: Option<Vec<u8>> = self.redis.query(&cmd).await.map_err(err)?;
            Ok(v.and_then(|v| codec::decode_client(&v)))
        })
    }

    fn touch_client<'a>(&'a self, client_id: &'a str) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            let keys = [self.k("as:client", client_id), self.redis.key("as:clients", &[])];
            let args = [b(part(client_id)), b(now_secs()), b(self.idle())];
            self.eval::<i64>(&self.s.touch_client, &keys, &args).await.map(|_| ())
        })
    }

    fn put_pending(
        &self,
        state: String,
        pending: PendingAuthorization,
    ) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(async move {
            let sealed = self
                .key
                .seal_record(PENDING_KIND, &state, &codec::encode_pending(&pending))
                .ok_or_else(|| StoreError::Unavailable("encryption failed".into()))?;
            let keys = [self.k("as:pending", &state), self.redis.key("as:pendings", &[])];
            let args = [
                sealed,
                b(part(&state)),
                b(now_ms()),
                b(pending.expires_at.saturating_mul(1000)),
                b(self.bounds.max_pending_authorizations),
            ];
            match self.eval::<i64>(&self.s.put_bounded, &keys, &args).await? {
                1 => Ok(()),
                _ => Err(StoreError::Capacity("pending authorizations")),
            }
        })
    }

    fn take_pending<'a>(
        &'a self,
        state: &'a str,
    ) -> BoxFuture<'a, Result<Option<PendingAuthorization>, StoreError>> {
        Box::pin(async move {
            let keys = [self.k("as:pending", state), self.redis.key("as:pendings", &[])];
            let v: Option<Vec<u8>> = self.eval(&self.s.take, &keys, &[b(part(state))]).await?;
            Ok(v.and_then(|v| self.key.open_record(PENDING_KIND, state, &v))
                .and_then(|plain| codec::decode_pending(&plain))
                .filter(|p| p.expires_at > now_secs()))
        })
    }

    fn put_code(
        &self,
        code_hash: String,
        code: CodeRecord,
    ) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(async move {
            let mut value = format!("L{}\n", code.family_id).into_bytes();
            value.extend(codec::encode_code(&code));
            let keys = [self.k("as:code", &code_hash), self.redis.key("as:codes", &[])];
            let args = [
                value,
                b(part(&code_hash)),
                b(now_ms()),
                b(code.expires_at.saturating_mul(1000)),
                b(self.bounds.max_codes),
            ];
            match self.eval::<i64>(&self.s.put_bounded, &keys, &args).await? {
                1 => Ok(()),
                _ => Err(StoreError::Capacity("authorization codes")),
            }
        })
    }

    fn take_code<'a>(&'a self, code_hash: &'a str) -> BoxFuture<'a, Result<CodeTake, StoreError>> {
        Box::pin(async move {
            let keys = [self.k("as:code", code_hash), self.redis.key("as:codes", &[])];
            let used_ms = self.bounds.used_code_ttl.as_millis().max(1);
            let args = [b(part(code_hash)), b(now_ms()), b(used_ms)];
            let v: Option<Vec<u8>> = self.eval(&self.s.take_code, &keys, &args).await?;
            let Some(v) = v else { return Ok(CodeTake::Unknown) };
            match v.split_first() {
                Some((b'U', fid)) => {
                    Ok(CodeTake::Replayed { family_id: String::from_utf8_lossy(fid).into_owned() })
                }
                Some((b'L', rest)) => {
                    let json = rest.splitn(2, |c| *c == b'\n').nth(1).unwrap_or_default();
                    match codec::decode_code(json) {
                        Some(r) if r.expires_at > now_secs() => Ok(CodeTake::Fresh(Box::new(r))),
                        _ => Ok(CodeTake::Unknown),
                    }
                }
                _ => Ok(CodeTake::Unknown),
            }
        })
    }

    fn put_family(&self, family: RefreshFamily) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(async move {
            let keys = [self.k("as:family", &family.family_id), self.redis.key("as:families", &[])];
            let args = [
                codec::encode_family(&family),
                b(&family.family_id),
                b(&family.current_hash),
                b(&family.client_id),
                b(family.expires_at),
                b(now_secs()),
                b(self.bounds.max_refresh_families),
                b(self.prefix("as:token")),
            ];
            match self.eval::<i64>(&self.s.put_family, &keys, &args).await? {
                1 => Ok(()),
                _ => Err(StoreError::Capacity("refresh token families")),
            }
        })
    }

    fn family_by_token<'a>(
        &'a self,
        token_hash: &'a str,
    ) -> BoxFuture<'a, Result<Option<RefreshFamily>, StoreError>> {
        Box::pin(async move {
            let cmd = redis::cmd("GET").arg(self.k("as:token", token_hash)).to_owned();
            let fid: Option<String> = self.redis.query(&cmd).await.map_err(err)?;
            let Some(fid) = fid else { return Ok(None) };
            Ok(self
                .family(&fid)
                .await?
                .filter(|f| f.current_hash == token_hash && f.expires_at > now_secs()))
        })
    }

    fn rotate_refresh<'a>(
        &'a self,
        presented_hash: &'a str,
        client_id: &'a str,
        next_hash: String,
        next_expires_at: u64,
    ) -> BoxFuture<'a, Result<Rotation, StoreError>> {
        Box::pin(async move {
            let keys = [self.k("as:token", presented_hash), self.redis.key("as:families", &[])];
            let args = [
                b(presented_hash),
                b(client_id),
                b(&next_hash),
                b(next_expires_at),
                b(now_secs()),
                b(self.prefix("as:family")),
                b(self.prefix("as:token")),
                b(RETIRED_PER_FAMILY),
            ];
            let r: Vec<Vec<u8>> = self.eval(&self.s.rotate, &keys, &args).await?;
            let text = |i: usize| r.get(i).map(|v| String::from_utf8_lossy(v).into_owned());
            Ok(match (text(0).as_deref(), text(1), r.get(2)) {
                (Some("reused"), Some(family_id), _) => Rotation::Reused { family_id },
                (Some("rotated"), Some(_), Some(rec)) => {
                    match codec::decode_family(rec, next_hash, next_expires_at) {
                        Some(f) => Rotation::Rotated(f),
                        None => Rotation::Invalid,
                    }
                }
                _ => Rotation::Invalid,
            })
        })
    }

    fn revoke_family<'a>(&'a self, family_id: &'a str) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            let keys = [self.k("as:family", family_id), self.redis.key("as:families", &[])];
            let args = [b(family_id), b(self.prefix("as:token"))];
            self.eval::<i64>(&self.s.revoke_family, &keys, &args).await.map(|_| ())
        })
    }

    fn user_id<'a>(
        &'a self,
        upstream: &'a str,
        subject: &'a str,
    ) -> BoxFuture<'a, Result<String, StoreError>> {
        Box::pin(async move {
            let member = format!("{}:{}", part(upstream), part(subject));
            let keys =
                [self.redis.key("as:user", &[upstream, subject]), self.redis.key("as:users", &[])];
            let args = [
                b(new_uuid()),
                b(&member),
                b(now_secs()),
                b(self.idle()),
                b(self.bounds.max_users),
                b(self.prefix("as:user")),
            ];
            self.eval(&self.s.user_id, &keys, &args).await
        })
    }
}
