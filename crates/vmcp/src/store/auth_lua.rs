//! The Lua scripts of [`super::auth::RedisAuthStore`]: each is one atomic step of the
//! [`crate::auth::server::store::AuthStore`] contract. Times are Unix seconds passed in by the
//! caller (`now`); TTLs are milliseconds. Every count bound is a sorted set of ids scored by
//! the moment the id stops counting, pruned before each insert.
//!
//! Ids concatenated into key names inside a script (`prefix .. id`) are ones that cannot break
//! a key: encoded with `store::part`, or base64url (token hashes, family ids).

/// Stores a client. KEYS: client key, clients zset. ARGV: json, member, now, idle (s),
/// max, min age (s), client key prefix. Returns 1, or 0 at capacity.
pub(super) const PUT_CLIENT: &str = r"
local now, idle, max, min_age = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now - idle)
if redis.call('EXISTS', KEYS[1]) == 0 and redis.call('ZCARD', KEYS[2]) >= max then
  local victim = nil
  for _, m in ipairs(redis.call('ZRANGE', KEYS[2], 0, 99)) do
    local v = redis.call('GET', ARGV[7] .. m)
    if not v then
      redis.call('ZREM', KEYS[2], m)
      victim = m
      break
    end
    local c = cjson.decode(v)
    if c.source == 'registered' and c.issued_at + min_age <= now then
      redis.call('DEL', ARGV[7] .. m)
      redis.call('ZREM', KEYS[2], m)
      victim = m
      break
    end
  end
  if not victim then return 0 end
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', idle * 1000)
redis.call('ZADD', KEYS[2], now, ARGV[2])
return 1
";

/// Marks a client used. KEYS: client key, clients zset. ARGV: member, now, idle (s).
pub(super) const TOUCH_CLIENT: &str = r"
if redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[3]) * 1000) == 1 then
  redis.call('ZADD', KEYS[2], 'XX', tonumber(ARGV[2]), ARGV[1])
end
return 1
";

/// Stores a record counted in a zset. KEYS: record key, zset. ARGV: value, member, now (ms),
/// until (ms), max. Returns 1, or 0 at capacity.
pub(super) const PUT_BOUNDED: &str = r"
local now, untl, max = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
if redis.call('ZSCORE', KEYS[2], ARGV[2]) == false and redis.call('ZCARD', KEYS[2]) >= max then
  return 0
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', math.max(1, untl - now))
redis.call('ZADD', KEYS[2], untl, ARGV[2])
return 1
";

/// Takes a record once. KEYS: record key, zset. ARGV: member. Returns the value or nil.
pub(super) const TAKE: &str = r"
local v = redis.call('GET', KEYS[1])
if v then redis.call('DEL', KEYS[1]) end
redis.call('ZREM', KEYS[2], ARGV[1])
return v
";

/// Spends a code. A live code is `L<family id>\n<json>`, a used one `U<family id>`. KEYS: code
/// key, codes zset. ARGV: member, now (ms), used TTL (ms). Returns the value found (before
/// marking it used) or nil.
pub(super) const TAKE_CODE: &str = r"
local v = redis.call('GET', KEYS[1])
if not v then return false end
if string.sub(v, 1, 1) == 'L' then
  local fam = string.match(v, '^L([^\n]*)\n')
  local ttl = math.max(tonumber(ARGV[3]), redis.call('PTTL', KEYS[1]))
  redis.call('SET', KEYS[1], 'U' .. fam, 'PX', ttl)
  redis.call('ZADD', KEYS[2], tonumber(ARGV[2]) + ttl, ARGV[1])
end
return v
";

/// Drops a family and every token hash pointing at it: a local function the family scripts
/// share. Family hash fields: `rec` (JSON), `cur` (current hash), `client`, `exp` (s),
/// `retired` (space-separated hashes).
const DROP: &str = r"
local function drop(fkey, tprefix, fzset, fid)
  local f = redis.call('HMGET', fkey, 'cur', 'retired')
  if f[1] then redis.call('DEL', tprefix .. f[1]) end
  if f[2] then
    for h in string.gmatch(f[2], '%S+') do redis.call('DEL', tprefix .. h) end
  end
  redis.call('DEL', fkey)
  redis.call('ZREM', fzset, fid)
end
";

/// Starts a family. KEYS: family key, families zset. ARGV: rec json, family id, current hash,
/// client id, expires_at (s), now (s), max, token prefix. Returns 1, or 0 at capacity.
pub(super) fn put_family() -> String {
    format!(
        "{DROP}{}",
        r"
local exp, now, max = tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
drop(KEYS[1], ARGV[8], KEYS[2], ARGV[2])
if redis.call('ZCARD', KEYS[2]) >= max then return 0 end
local ttl = math.max(1, exp - now) * 1000
redis.call('HSET', KEYS[1], 'rec', ARGV[1], 'cur', ARGV[3], 'client', ARGV[4], 'exp', exp, 'retired', '')
redis.call('PEXPIRE', KEYS[1], ttl)
redis.call('SET', ARGV[8] .. ARGV[3], ARGV[2], 'PX', ttl)
redis.call('ZADD', KEYS[2], exp, ARGV[2])
return 1
"
    )
}

/// Revokes a family. KEYS: family key, families zset. ARGV: family id, token prefix.
pub(super) fn revoke_family() -> String {
    format!("{DROP}drop(KEYS[1], ARGV[2], KEYS[2], ARGV[1])\nreturn 1\n")
}

/// Rotates a refresh token. KEYS: presented token key, families zset. ARGV: presented hash,
/// client id, next hash, next expires_at (s), now (s), family prefix, token prefix, retired
/// kept. Returns `{'invalid'}`, `{'reused', fid}` or `{'rotated', fid, rec}`.
pub(super) fn rotate() -> String {
    format!(
        "{DROP}{}",
        r"
local fid = redis.call('GET', KEYS[1])
if not fid then return {'invalid'} end
local fkey = ARGV[6] .. fid
local f = redis.call('HMGET', fkey, 'cur', 'client', 'exp', 'retired', 'rec')
if not f[1] then
  redis.call('DEL', KEYS[1])
  return {'invalid'}
end
if f[1] ~= ARGV[1] then
  drop(fkey, ARGV[7], KEYS[2], fid)
  return {'reused', fid}
end
local now = tonumber(ARGV[5])
if f[2] ~= ARGV[2] or tonumber(f[3]) <= now then return {'invalid'} end
local retired = {}
for h in string.gmatch(f[4] or '', '%S+') do table.insert(retired, h) end
table.insert(retired, ARGV[1])
local keep = tonumber(ARGV[8])
while #retired > keep do
  redis.call('DEL', ARGV[7] .. table.remove(retired, 1))
end
local exp = tonumber(ARGV[4])
local ttl = math.max(1, exp - now) * 1000
redis.call('HSET', fkey, 'cur', ARGV[3], 'exp', exp, 'retired', table.concat(retired, ' '))
redis.call('PEXPIRE', fkey, ttl)
redis.call('SET', ARGV[7] .. ARGV[3], fid, 'PX', ttl)
for _, h in ipairs(retired) do redis.call('PEXPIRE', ARGV[7] .. h, ttl) end
redis.call('ZADD', KEYS[2], exp, fid)
return {'rotated', fid, f[5]}
"
    )
}

/// The user id of an upstream identity. KEYS: user key, users zset. ARGV: new id, member, now
/// (s), idle (s), max, user key prefix. Returns the id.
pub(super) const USER_ID: &str = r"
local now, idle, max = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local id = redis.call('GET', KEYS[1])
if not id then
  if redis.call('ZCARD', KEYS[2]) >= max then
    local old = redis.call('ZPOPMIN', KEYS[2])
    if old[1] then redis.call('DEL', ARGV[6] .. old[1]) end
  end
  id = ARGV[1]
end
redis.call('SET', KEYS[1], id, 'PX', idle * 1000)
redis.call('ZADD', KEYS[2], now, ARGV[2])
return id
";
