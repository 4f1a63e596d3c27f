//! The Lua scripts: each state transition that must happen once, atomically on one run's hash.
//!
//! Run keys: `KEYS[1]` the run hash, `KEYS[2]` the timeline list, `KEYS[3]` the outputs hash.
//! Scripts answer `{applied, open}` where `open` counts the run's steps not yet final.

use std::sync::LazyLock;

use redis::Script;

/// Lua shared by the scripts that can close a run's last open step: when `open` is 0 and the
/// run is still running, finishes it (`failed` when the `failed` counter is above 0) and
/// answers the final status, else `''`. Uses `KEYS[1]` (run hash) and `KEYS[2]` (timeline).
macro_rules! finish_if_done_lua {
    () => {
        r#"
local function finish_if_done(open, now)
  if open ~= 0 or redis.call('HGET', KEYS[1], 'status') ~= 'running' then return '' end
  local status = 'completed'
  if tonumber(redis.call('HGET', KEYS[1], 'failed') or '0') > 0 then status = 'failed' end
  redis.call('HSET', KEYS[1], 'status', status, 'ended_at', now)
  redis.call('RPUSH', KEYS[2], '{"at":' .. now .. ',"kind":"run.' .. status .. '"}')
  return status
end
local function created_at() return tonumber(redis.call('HGET', KEYS[1], 'created_at')) end
"#
    };
}

/// Creates a run unless its hash exists. ARGV: the number of field/value pairs, the pairs,
/// then timeline entries.
pub(crate) static CREATE_RUN: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
local n = tonumber(ARGV[1])
local fields = {}
for i = 2, 1 + 2 * n do fields[#fields + 1] = ARGV[i] end
redis.call('HSET', KEYS[1], unpack(fields))
for i = 2 + 2 * n, #ARGV do redis.call('RPUSH', KEYS[2], ARGV[i]) end
return 1
"#,
    )
});

/// Starts an attempt under a lease, optionally returning the run state as of the start.
/// ARGV: step, attempt, now, lease, entry, takeover entry, with state (1/0). Answers
/// `{answer, ms left, {meta, event, status}, {step, output, …}}` (the tables empty without
/// state), answer 1 started (fresh, or taken over from an expired lease), 2 busy (`ms left` of
/// a live lease), 0 stale, -1 no such step, -2 no such run.
pub(crate) static START_ATTEMPT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local with_state = ARGV[7] == '1'
local head = {}
local outputs = {}
if with_state then
  head = redis.call('HMGET', KEYS[1], 'meta', 'event', 'status')
  if not head[1] then return {-2, 0, {}, {}} end
  outputs = redis.call('HGETALL', KEYS[3])
end
local step = ARGV[1]
local st = redis.call('HGET', KEYS[1], 'st:' .. step)
if not st then
  if redis.call('EXISTS', KEYS[1]) == 0 then return {-2, 0, {}, {}} end
  return {-1, 0, head, outputs}
end
local at = tonumber(redis.call('HGET', KEYS[1], 'at:' .. step) or '0')
local attempt = tonumber(ARGV[2])
local now = tonumber(ARGV[3])
local entry = ARGV[5]
if st == 'running' and at == attempt then
  local lease = tonumber(redis.call('HGET', KEYS[1], 'ls:' .. step) or '0')
  if lease > now then return {2, lease - now, head, outputs} end
  entry = ARGV[6]
elseif not ((st == 'queued' or st == 'waiting') and at == attempt - 1) then
  return {0, 0, head, outputs}
end
redis.call('HSET', KEYS[1], 'st:' .. step, 'running', 'at:' .. step, attempt, 'ls:' .. step, now + tonumber(ARGV[4]))
redis.call('RPUSH', KEYS[2], entry)
return {1, 0, head, outputs}
"#,
    )
});

/// Extends a running attempt's lease. ARGV: step, attempt, until.
pub(crate) static RENEW_ATTEMPT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local step = ARGV[1]
local st = redis.call('HGET', KEYS[1], 'st:' .. step)
local at = tonumber(redis.call('HGET', KEYS[1], 'at:' .. step) or '0')
if st ~= 'running' or at ~= tonumber(ARGV[2]) then return 0 end
redis.call('HSET', KEYS[1], 'ls:' .. step, ARGV[3])
return 1
"#,
    )
});

/// `running` at `attempt` → `completed|failed` (first writer wins), finishing the run when
/// it was its last open step. ARGV: step, attempt, status, output ('' = none), error
/// ('' = none), log ('' = none), entry, now. Answers `{applied, open, run status set or '',
/// created_at}`; applied is -1 for a missing step.
pub(crate) static FINISH_ATTEMPT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(concat!(
        finish_if_done_lua!(),
        r#"
local step = ARGV[1]
local st = redis.call('HGET', KEYS[1], 'st:' .. step)
if not st then return {-1, 0, '', 0} end
local at = tonumber(redis.call('HGET', KEYS[1], 'at:' .. step) or '0')
if st ~= 'running' or at ~= tonumber(ARGV[2]) then
  return {0, tonumber(redis.call('HGET', KEYS[1], 'open')), '', 0}
end
redis.call('HSET', KEYS[1], 'st:' .. step, ARGV[3])
redis.call('HDEL', KEYS[1], 'ls:' .. step)
if ARGV[4] ~= '' then
  if ARGV[3] == 'completed' then
    redis.call('HSET', KEYS[3], step, ARGV[4])
  else
    redis.call('HSET', KEYS[1], 'fo:' .. step, ARGV[4])
  end
end
if ARGV[3] == 'failed' then redis.call('HINCRBY', KEYS[1], 'failed', 1) end
if ARGV[5] ~= '' then redis.call('HSET', KEYS[1], 'er:' .. step, ARGV[5]) else redis.call('HDEL', KEYS[1], 'er:' .. step) end
if ARGV[6] ~= '' then redis.call('HSET', KEYS[1], 'lg:' .. step, ARGV[6]) else redis.call('HDEL', KEYS[1], 'lg:' .. step) end
local open = redis.call('HINCRBY', KEYS[1], 'open', -1)
redis.call('RPUSH', KEYS[2], ARGV[7])
return {1, open, finish_if_done(open, ARGV[8]), created_at()}
"#
    ))
});

/// `running` at `attempt` → `waiting`, recording error and log. ARGV: step, attempt, error,
/// log ('' = none), entry.
pub(crate) static RETRY_ATTEMPT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local step = ARGV[1]
local st = redis.call('HGET', KEYS[1], 'st:' .. step)
if not st then return -1 end
local at = tonumber(redis.call('HGET', KEYS[1], 'at:' .. step) or '0')
if st ~= 'running' or at ~= tonumber(ARGV[2]) then return 0 end
redis.call('HSET', KEYS[1], 'st:' .. step, 'waiting', 'er:' .. step, ARGV[3])
redis.call('HDEL', KEYS[1], 'ls:' .. step)
if ARGV[4] ~= '' then redis.call('HSET', KEYS[1], 'lg:' .. step, ARGV[4]) else redis.call('HDEL', KEYS[1], 'lg:' .. step) end
redis.call('RPUSH', KEYS[2], ARGV[5])
return 1
"#,
    )
});

/// `from` → `to`, finishing the run when it closed its last open step. ARGV: step, from, to,
/// detail ('' = none), 1 when `to` is final, entry, now. Answers like `FINISH_ATTEMPT`.
pub(crate) static TRANSITION: LazyLock<Script> = LazyLock::new(|| {
    Script::new(concat!(
        finish_if_done_lua!(),
        r#"
local step = ARGV[1]
local st = redis.call('HGET', KEYS[1], 'st:' .. step)
if not st then return {-1, 0, '', 0} end
if st ~= ARGV[2] then return {0, tonumber(redis.call('HGET', KEYS[1], 'open')), '', 0} end
redis.call('HSET', KEYS[1], 'st:' .. step, ARGV[3])
if ARGV[3] == 'skipped' and ARGV[4] ~= '' then redis.call('HSET', KEYS[1], 'er:' .. step, ARGV[4]) end
if ARGV[3] == 'failed' then redis.call('HINCRBY', KEYS[1], 'failed', 1) end
redis.call('RPUSH', KEYS[2], ARGV[6])
if ARGV[5] ~= '1' then return {1, tonumber(redis.call('HGET', KEYS[1], 'open')), '', 0} end
local open = redis.call('HINCRBY', KEYS[1], 'open', -1)
return {1, open, finish_if_done(open, ARGV[7]), created_at()}
"#
    ))
});

/// Records edge `parent → child` once. ARGV: child, parent, taken (1/0).
/// Answers `{recorded, taken, not_taken}`; recorded is -1 when the child does not exist.
pub(crate) static RESOLVE_EDGE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local child = ARGV[1]
if redis.call('HEXISTS', KEYS[1], 'st:' .. child) == 0 then return {-1, 0, 0} end
local recorded = redis.call('HSETNX', KEYS[1], 'e:' .. child .. ':' .. ARGV[2], ARGV[3])
if recorded == 1 then
  if ARGV[3] == '1' then
    redis.call('HINCRBY', KEYS[1], 'et:' .. child, 1)
  else
    redis.call('HINCRBY', KEYS[1], 'en:' .. child, 1)
  end
end
local t = tonumber(redis.call('HGET', KEYS[1], 'et:' .. child) or '0')
local n = tonumber(redis.call('HGET', KEYS[1], 'en:' .. child) or '0')
return {recorded, t, n}
"#,
    )
});

/// `running` → final status. ARGV: status, ended_at, entry. Answers
/// `{1, created_at, status}` when applied, `{0, created_at, status}` when the run had already
/// finished (so the caller can repair the status index), `{-1, 0, ''}` for a missing run.
pub(crate) static FINISH_RUN: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local st = redis.call('HGET', KEYS[1], 'status')
if not st then return {-1, 0, ''} end
local created = tonumber(redis.call('HGET', KEYS[1], 'created_at'))
if st ~= 'running' then return {0, created, st} end
redis.call('HSET', KEYS[1], 'status', ARGV[1], 'ended_at', ARGV[2])
redis.call('RPUSH', KEYS[2], ARGV[3])
return {1, created, ARGV[1]}
"#,
    )
});

/// Schedules a timer unless its id exists. KEYS: due zset, data hash. ARGV: id, due, JSON.
pub(crate) static SCHEDULE_TIMER: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
if redis.call('HSETNX', KEYS[2], ARGV[1], ARGV[3]) == 1 then
  redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
end
return 1
"#,
    )
});

/// Claims due timers, leasing each. KEYS: due zset, data hash. ARGV: now, limit, lease.
pub(crate) static CLAIM_TIMERS: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
local out = {}
local until_ms = tonumber(ARGV[1]) + tonumber(ARGV[3])
for _, id in ipairs(ids) do
  local data = redis.call('HGET', KEYS[2], id)
  if data then
    redis.call('ZADD', KEYS[1], until_ms, id)
    out[#out + 1] = data
  else
    redis.call('ZREM', KEYS[1], id)
  end
end
return out
"#,
    )
});

/// Records edge `parent → child` and applies the child's join rule (see
/// `weir_core::state::JoinRule::decide`), moving the child `pending → queued|skipped` when the
/// edge decides it, and finishing the run when a skip closed its last open step. ARGV: child,
/// parent, taken (1/0), parents, any (1/0), recovering (1/0), skip reason, queued entry,
/// skipped entry, now. Answers `{recorded, taken, not_taken, decision, applied, open, run
/// status set or '', created_at}` with decision 1 queue, 0 skip, -1 none; recorded is -1 for a
/// missing child.
pub(crate) static RESOLVE_JOIN: LazyLock<Script> = LazyLock::new(|| {
    Script::new(concat!(
        finish_if_done_lua!(),
        r#"
local child = ARGV[1]
local st = redis.call('HGET', KEYS[1], 'st:' .. child)
if not st then return {-1, 0, 0, -1, 0, 0, '', 0} end
local taken = ARGV[3] == '1'
local recorded = redis.call('HSETNX', KEYS[1], 'e:' .. child .. ':' .. ARGV[2], ARGV[3])
if recorded == 1 then
  if taken then redis.call('HINCRBY', KEYS[1], 'et:' .. child, 1) else redis.call('HINCRBY', KEYS[1], 'en:' .. child, 1) end
end
local t = tonumber(redis.call('HGET', KEYS[1], 'et:' .. child) or '0')
local n = tonumber(redis.call('HGET', KEYS[1], 'en:' .. child) or '0')
local open = tonumber(redis.call('HGET', KEYS[1], 'open'))
local recovering = ARGV[6] == '1'
if recorded == 0 and not recovering then return {0, t, n, -1, 0, open, '', 0} end
local parents = tonumber(ARGV[4])
local decision = -1
if ARGV[5] == '1' then
  if t >= 1 and ((taken and t == 1) or recovering) then decision = 1
  elseif t + n == parents and t == 0 then decision = 0 end
elseif t + n == parents then
  if n == 0 then decision = 1 else decision = 0 end
end
local applied = 0
local finished = ''
if decision ~= -1 and st == 'pending' then
  applied = 1
  if decision == 1 then
    redis.call('HSET', KEYS[1], 'st:' .. child, 'queued')
    redis.call('RPUSH', KEYS[2], ARGV[8])
  else
    redis.call('HSET', KEYS[1], 'st:' .. child, 'skipped')
    if ARGV[7] ~= '' then redis.call('HSET', KEYS[1], 'er:' .. child, ARGV[7]) end
    open = redis.call('HINCRBY', KEYS[1], 'open', -1)
    redis.call('RPUSH', KEYS[2], ARGV[9])
    finished = finish_if_done(open, ARGV[10])
  end
end
return {recorded, t, n, decision, applied, open, finished, created_at()}
"#
    ))
});
