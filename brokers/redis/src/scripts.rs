//! The Lua scripts of the broker: each is one atomic step on the server.
//!
//! `redis::Script` sends `EVALSHA` and loads the script on `NOSCRIPT` (after a Redis restart).
//! Scripts that act on a pending entry first check, with `XPENDING`, that the entry is still
//! pending for the calling consumer: an entry reclaimed by another consumer (its lease ran
//! out) is left to that consumer.

use std::sync::LazyLock;

use redis::Script;

/// Creates consumer group `ARGV[1]` at id `0` on every stream of `KEYS` (`MKSTREAM`),
/// ignoring `BUSYGROUP` (the group exists already).
pub(crate) static ENSURE_GROUPS: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
for _, key in ipairs(KEYS) do
  local r = redis.pcall('XGROUP', 'CREATE', key, ARGV[1], '0', 'MKSTREAM')
  if type(r) == 'table' and r.err and not string.find(r.err, 'BUSYGROUP', 1, true) then
    return redis.error_reply(r.err)
  end
end
return 1
"#,
    )
});

/// Redelivers a pending entry now: adds it to the group's retry stream and acks the original.
///
/// KEYS: 1 source stream, 2 retry stream.
/// ARGV: 1 group, 2 consumer, 3 entry id, 4 key, 5 payload, 6 redeliveries of the new entry,
/// 7 `1` to also `XDEL` the original (only for the retry stream, which one group reads).
/// Returns 1 when requeued, 0 when the entry is no longer pending for this consumer.
pub(crate) static REQUEUE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local p = redis.pcall('XPENDING', KEYS[1], ARGV[1], ARGV[3], ARGV[3], 1)
if type(p) ~= 'table' or p.err or #p == 0 or p[1][2] ~= ARGV[2] then return 0 end
redis.call('XADD', KEYS[2], '*', 'k', ARGV[4], 'p', ARGV[5], 'r', ARGV[6])
redis.call('XACK', KEYS[1], ARGV[1], ARGV[3])
if ARGV[7] == '1' then redis.call('XDEL', KEYS[1], ARGV[3]) end
return 1
"#,
    )
});

/// Schedules a pending entry for redelivery after a delay and acks the original.
///
/// KEYS: 1 source stream, 2 the group's delayed sorted set.
/// ARGV: 1 group, 2 consumer, 3 entry id, 4 delay in ms, 5 sorted-set member (see
/// [`delayed_member`](crate::stream::delayed_member)), 6 `1` to also `XDEL` the original.
/// The score is the due time on the Redis server's clock (ms). Returns 1 or 0 as [`REQUEUE`].
pub(crate) static DELAY: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local p = redis.pcall('XPENDING', KEYS[1], ARGV[1], ARGV[3], ARGV[3], 1)
if type(p) ~= 'table' or p.err or #p == 0 or p[1][2] ~= ARGV[2] then return 0 end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZADD', KEYS[2], now + tonumber(ARGV[4]), ARGV[5])
redis.call('XACK', KEYS[1], ARGV[1], ARGV[3])
if ARGV[6] == '1' then redis.call('XDEL', KEYS[1], ARGV[3]) end
return 1
"#,
    )
});

/// Moves due delayed entries into the retry stream.
///
/// KEYS: 1 delayed sorted set, 2 retry stream. ARGV: 1 the most to move.
/// Returns `{moved, ms until the next one is due or -1}` (0 when more are due already).
pub(crate) static PROMOTE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, tonumber(ARGV[1]))
for _, m in ipairs(due) do
  local r, klen, start = string.match(m, '^(%d+)\n[^\n]*\n(%d+)\n()')
  if r then
    klen = tonumber(klen)
    redis.call('XADD', KEYS[2], '*', 'k', string.sub(m, start, start + klen - 1),
      'p', string.sub(m, start + klen), 'r', r)
  end
  redis.call('ZREM', KEYS[1], m)
end
local nxt = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
if #nxt == 0 then return {#due, -1} end
local wait = tonumber(nxt[2]) - now
if wait < 0 then wait = 0 end
return {#due, wait}
"#,
    )
});

/// Resets the idle time of entries still pending for this consumer (`XCLAIM … JUSTID`, which
/// does not count a delivery): the lease of a live process never runs out.
///
/// KEYS: 1 stream. ARGV: 1 group, 2 consumer, 3… entry ids. Returns how many were renewed.
pub(crate) static RENEW: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local n = 0
for i = 3, #ARGV do
  local p = redis.pcall('XPENDING', KEYS[1], ARGV[1], ARGV[i], ARGV[i], 1)
  if type(p) == 'table' and not p.err and #p > 0 and p[1][2] == ARGV[2] then
    redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, ARGV[i], 'JUSTID')
    n = n + 1
  end
end
return n
"#,
    )
});

/// Trims the topic stream below the oldest entry some group still needs, and forgets idle
/// consumers of this group that hold nothing.
///
/// Every group needs its oldest pending entry and everything after its last-delivered id;
/// `XTRIM MINID` removes only what every group has read and acked (so no `XDEL` on ack is
/// needed, and no group loses an entry it has not read). A stream without groups is kept
/// whole: its entries go to the first group that subscribes.
///
/// A consumer of group `ARGV[1]` with no pending entry, idle longer than `ARGV[2]` ms, is
/// deleted (`XGROUP DELCONSUMER` loses nothing when nothing is pending; a live consumer is
/// recreated by its next read).
///
/// KEYS: 1 topic stream, 2 retry stream. Returns the number of entries trimmed.
pub(crate) static TRIM: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local function parse(id)
  local ms, seq = string.match(id, '^(%d+)-(%d+)$')
  return tonumber(ms), tonumber(seq)
end
local function less(a, b)
  local am, as = parse(a)
  local bm, bs = parse(b)
  return am < bm or (am == bm and as < bs)
end
local trimmed = 0
local groups = redis.pcall('XINFO', 'GROUPS', KEYS[1])
if type(groups) == 'table' and not groups.err and #groups > 0 then
  local keep = nil
  for _, g in ipairs(groups) do
    local name, last
    for i = 1, #g, 2 do
      if g[i] == 'name' then name = g[i + 1] elseif g[i] == 'last-delivered-id' then last = g[i + 1] end
    end
    local p = redis.call('XPENDING', KEYS[1], name)
    local need
    if tonumber(p[1]) > 0 then
      need = p[2]
    else
      local ms, seq = string.match(last, '^(%d+)-(%d+)$')
      need = ms .. '-' .. string.format('%d', tonumber(seq) + 1)
    end
    if keep == nil or less(need, keep) then keep = need end
  end
  trimmed = redis.call('XTRIM', KEYS[1], 'MINID', keep)
end
local idle_limit = tonumber(ARGV[2])
for _, key in ipairs(KEYS) do
  local cs = redis.pcall('XINFO', 'CONSUMERS', key, ARGV[1])
  if type(cs) == 'table' and not cs.err then
    for _, c in ipairs(cs) do
      local name, pending, idle
      for i = 1, #c, 2 do
        if c[i] == 'name' then name = c[i + 1]
        elseif c[i] == 'pending' then pending = c[i + 1]
        elseif c[i] == 'idle' then idle = c[i + 1] end
      end
      if pending == 0 and idle and idle > idle_limit then
        redis.call('XGROUP', 'DELCONSUMER', key, ARGV[1], name)
      end
    end
  end
end
return trimmed
"#,
    )
});

/// Deletes consumer `ARGV[2]` of group `ARGV[1]` from every stream of `KEYS` where it holds
/// no pending entry (a subscription going away). Returns how many were deleted.
pub(crate) static FORGET_CONSUMER: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local n = 0
for _, key in ipairs(KEYS) do
  local p = redis.pcall('XPENDING', key, ARGV[1], '-', '+', 1, ARGV[2])
  if type(p) == 'table' and not p.err and #p == 0 then
    redis.call('XGROUP', 'DELCONSUMER', key, ARGV[1], ARGV[2])
    n = n + 1
  end
end
return n
"#,
    )
});
