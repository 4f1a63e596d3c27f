//! The Lua scripts: each state transition that must happen once, atomically on one run's hash;
//! and each move of a job (see `crate::jobs`), atomically on the `{jobs}` keys.
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
  if open ~= 0 then return '' end
  local run = redis.call('HMGET', KEYS[1], 'status', 'failed')
  if run[1] ~= 'running' then return '' end
  local status = 'completed'
  if tonumber(run[2] or '0') > 0 then status = 'failed' end
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
local history = {}
for i = 2 + 2 * n, #ARGV do history[#history + 1] = ARGV[i] end
if #history > 0 then redis.call('RPUSH', KEYS[2], unpack(history)) end
return 1
"#,
    )
});

/// Starts an attempt under a lease, optionally returning the run state as of the start.
/// ARGV: step, attempt, now, lease, entry, takeover entry, with state (1/0). Answers
/// `{answer, ms left, {meta, event, status}, {step, output, …}}` (the tables empty without
/// state), answer 1 started (fresh, or taken over from an expired lease), 2 busy (`ms left` of
/// a live lease), 0 stale, -1 no such step, -2 no such run. Four Redis calls at most: each
/// call made from Lua costs Redis several microseconds, so reads share one `HMGET`.
pub(crate) static START_ATTEMPT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local step = ARGV[1]
local cur = redis.call('HMGET', KEYS[1], 'st:' .. step, 'at:' .. step, 'ls:' .. step, 'meta', 'event', 'status')
local head = {}
local outputs = {}
if not cur[4] then return {-2, 0, {}, {}} end
if ARGV[7] == '1' then
  head = {cur[4], cur[5], cur[6]}
  outputs = redis.call('HGETALL', KEYS[3])
end
local st = cur[1]
if not st then return {-1, 0, head, outputs} end
local at = tonumber(cur[2] or '0')
local attempt = tonumber(ARGV[2])
local now = tonumber(ARGV[3])
local entry = ARGV[5]
if st == 'running' and at == attempt then
  local lease = tonumber(cur[3]) or 0
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
/// ('' = none), log ('' = none), entry, now, then the number of pauses the completion begins
/// and for each its key, JSON, `specs,all,trigger id` and timeline entry (recorded only for a
/// completion, each once). Answers `{applied, open, run status set or '', created_at}`;
/// applied is -1 for a missing step. Counters are computed here and written in
/// the one `HSET` (the script is atomic), and a cleared error, log or lease is written as ''
/// rather than deleted: four Redis calls at most.
pub(crate) static FINISH_ATTEMPT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local step = ARGV[1]
local cur = redis.call('HMGET', KEYS[1], 'st:' .. step, 'at:' .. step, 'open', 'failed', 'status', 'created_at')
local st = cur[1]
if not st then return {-1, 0, '', 0} end
if st ~= 'running' or tonumber(cur[2] or '0') ~= tonumber(ARGV[2]) then
  return {0, tonumber(cur[3]), '', 0}
end
local open = tonumber(cur[3]) - 1
local failed = tonumber(cur[4] or '0')
if ARGV[3] == 'failed' then failed = failed + 1 end
local set = {'st:' .. step, ARGV[3], 'ls:' .. step, '', 'er:' .. step, ARGV[5], 'lg:' .. step, ARGV[6], 'open', open, 'failed', failed}
if ARGV[4] ~= '' then
  if ARGV[3] == 'completed' then
    redis.call('HSET', KEYS[3], step, ARGV[4])
  else
    set[#set + 1] = 'fo:' .. step; set[#set + 1] = ARGV[4]
  end
end
local finished = ''
if open == 0 and cur[5] == 'running' then
  finished = 'completed'
  if failed > 0 then finished = 'failed' end
  set[#set + 1] = 'status'; set[#set + 1] = finished
  set[#set + 1] = 'ended_at'; set[#set + 1] = ARGV[8]
end
redis.call('HSET', KEYS[1], unpack(set))
local entries = {ARGV[7]}
if ARGV[3] == 'completed' then
  local waits = 0
  for i = 0, tonumber(ARGV[9] or '0') - 1 do
    local k = ARGV[10 + 4 * i]
    if redis.call('HSETNX', KEYS[1], 'pz:' .. k, ARGV[11 + 4 * i]) == 1 then
      redis.call('HSET', KEYS[1], 'pk:' .. k, ARGV[12 + 4 * i], 'ps:' .. k, 'waiting')
      entries[#entries + 1] = ARGV[13 + 4 * i]
      waits = waits + 1
    end
  end
  if waits > 0 then redis.call('HINCRBY', KEYS[1], 'waits', waits) end
end
if finished == '' then
  redis.call('RPUSH', KEYS[2], unpack(entries))
  return {1, open, '', 0}
end
entries[#entries + 1] = '{"at":' .. ARGV[8] .. ',"kind":"run.' .. finished .. '"}'
redis.call('RPUSH', KEYS[2], unpack(entries))
return {1, open, finished, tonumber(cur[6])}
"#,
    )
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
local finished = finish_if_done(open, ARGV[7])
if finished == '' then return {1, open, '', 0} end
return {1, open, finished, created_at()}
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

/// Appends a timeline entry to a running run. ARGV: the entry. Answers 1 when it did.
pub(crate) static APPEND_TIMELINE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
if redis.call('HGET', KEYS[1], 'status') ~= 'running' then return 0 end
redis.call('RPUSH', KEYS[2], ARGV[1])
return 1
"#,
    )
});

/// Fails a running run without reading its state. ARGV: the end time, the timeline entry.
/// Answers `{applied, created_at, status}`: applied 1 failed now, 0 not running, -1 no such
/// run; the status after the call.
pub(crate) static FAIL_RUN: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local run = redis.call('HMGET', KEYS[1], 'status', 'created_at')
if not run[1] then return {-1, 0, ''} end
local created = tonumber(run[2]) or 0
if run[1] ~= 'running' then return {0, created, run[1]} end
redis.call('HSET', KEYS[1], 'status', 'failed', 'ended_at', ARGV[1])
redis.call('RPUSH', KEYS[2], ARGV[2])
return {1, created, 'failed'}
"#,
    )
});

/// Reopens a failed run whose last `run.failed` timeline entry contains `ARGV[1]` (the dead
/// letter that failed it; steps that ended after it may have added entries since). ARGV: that
/// text, the timeline entry. Answers `{applied, created_at, status}`: applied 1 reopened now,
/// 0 not failed so, -1 no such run; the status after the call.
pub(crate) static REOPEN_RUN: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local run = redis.call('HMGET', KEYS[1], 'status', 'created_at')
if not run[1] then return {-1, 0, ''} end
local created = tonumber(run[2]) or 0
if run[1] ~= 'failed' then return {0, created, run[1]} end
local entries = redis.call('LRANGE', KEYS[2], 0, -1)
local failing = nil
for i = #entries, 1, -1 do
  if string.find(entries[i], '"kind":"run.failed"', 1, true) then
    failing = entries[i]
    break
  end
end
if not failing or not string.find(failing, ARGV[1], 1, true) then return {0, created, 'failed'} end
redis.call('HSET', KEYS[1], 'status', 'running')
redis.call('HDEL', KEYS[1], 'ended_at')
redis.call('RPUSH', KEYS[2], ARGV[2])
return {1, created, 'running'}
"#,
    )
});

/// Records a dead letter unless its id is known, keeping the newest `ARGV[3]`. KEYS: the id
/// zset, the data hash. ARGV: id, JSON, the most kept.
pub(crate) static PUT_DEAD_LETTER: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
if redis.call('HSETNX', KEYS[2], ARGV[1], ARGV[2]) == 0 then return 0 end
redis.call('ZADD', KEYS[1], 0, ARGV[1])
local over = redis.call('ZCARD', KEYS[1]) - tonumber(ARGV[3])
if over > 0 then
  local oldest = redis.call('ZRANGE', KEYS[1], 0, over - 1)
  redis.call('ZREM', KEYS[1], unpack(oldest))
  redis.call('HDEL', KEYS[2], unpack(oldest))
end
return 1
"#,
    )
});

/// Deletes a finished run's keys (hash, timeline, outputs) unless it is running. Answers
/// `{1, meta, event}` when it deleted them (for the caller to drop the index entries),
/// `{0, nil, nil}` for a running or missing run.
pub(crate) static DELETE_FINISHED_RUN: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local run = redis.call('HMGET', KEYS[1], 'status', 'meta', 'event')
if not run[1] or run[1] == 'running' then return {0, false, false} end
redis.call('DEL', KEYS[1], KEYS[2], KEYS[3])
return {1, run[2], run[3]}
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
local edge = 'e:' .. child .. ':' .. ARGV[2]
local cur = redis.call('HMGET', KEYS[1], 'st:' .. child, 'et:' .. child, 'en:' .. child, 'open', edge)
local st = cur[1]
if not st then return {-1, 0, 0, -1, 0, 0, '', 0} end
local t = tonumber(cur[2] or '0')
local n = tonumber(cur[3] or '0')
local open = tonumber(cur[4])
local taken = ARGV[3] == '1'
local recorded = 0
local set = {}
if not cur[5] then
  recorded = 1
  set = {edge, ARGV[3]}
  if taken then t = t + 1; set[3] = 'et:' .. child; set[4] = t else n = n + 1; set[3] = 'en:' .. child; set[4] = n end
end
local recovering = ARGV[6] == '1'
local parents = tonumber(ARGV[4])
local decision = -1
if recorded == 1 or recovering then
  if ARGV[5] == '1' then
    if t >= 1 and ((taken and t == 1) or recovering) then decision = 1
    elseif t + n == parents and t == 0 then decision = 0 end
  elseif t + n == parents then
    if n == 0 then decision = 1 else decision = 0 end
  end
end
local applied = 0
local entry = nil
local skipped = false
if decision ~= -1 and st == 'pending' then
  applied = 1
  if decision == 1 then
    set[#set + 1] = 'st:' .. child; set[#set + 1] = 'queued'
    entry = ARGV[8]
  else
    skipped = true
    open = open - 1
    set[#set + 1] = 'st:' .. child; set[#set + 1] = 'skipped'
    set[#set + 1] = 'er:' .. child; set[#set + 1] = ARGV[7]
    set[#set + 1] = 'open'; set[#set + 1] = open
    entry = ARGV[9]
  end
end
if #set > 0 then redis.call('HSET', KEYS[1], unpack(set)) end
if entry then redis.call('RPUSH', KEYS[2], entry) end
local finished = ''
if skipped then finished = finish_if_done(open, ARGV[10]) end
if recorded == 0 and not recovering then return {0, t, n, -1, 0, open, '', 0} end
if finished == '' then return {recorded, t, n, decision, applied, open, '', 0} end
return {recorded, t, n, decision, applied, open, finished, created_at()}
"#
    ))
});

/// Appends a batch of events, all or nothing: each event's key unless it exists (`SET NX`),
/// and for each new one its entries in the by-`ts`, by-name and acceptance indexes, and, when
/// it has a user key, in the by-user index and the user acceptance index. An event is stored
/// as `#REQUEST\nJSON` when a request id is given (`ARGV[7]`, else as its JSON), so that an
/// undo knows which request stored it. An event found stored is marked with the request's id
/// (`''` for a plain append; a set expiring after `ARGV[6]` ms): that request was told it is
/// accepted, so an undo of the request that stored it leaves it. The first append writes
/// since when events are indexed by user (`KEYS[5]`): 0 on an empty store, else now (a
/// store written by an earlier weir). KEYS: the by-`ts` zset, the acceptance zset, the
/// request's "undone" key (a request taken back stores nothing), the user acceptance zset,
/// the "users indexed since" key. ARGV: the event key prefix, the by-name key prefix, the
/// event TTL (ms), now (ms), the found-again key prefix, its TTL (ms), the request's id, the
/// by-user key prefix, then per event its id, name, `ts`, user key (`''`: none) and JSON.
/// Answers `{1, new…}` (1/0 per event) or `{0}` for a request taken back.
pub(crate) static APPEND_EVENTS: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
if redis.call('EXISTS', KEYS[3]) == 1 then return {0} end
if redis.call('EXISTS', KEYS[5]) == 0 then
  local since = ARGV[4]
  if redis.call('ZCARD', KEYS[1]) == 0 then since = '0' end
  redis.call('SET', KEYS[5], since)
end
local owner = ''
if ARGV[7] ~= '' then owner = '#' .. ARGV[7] .. '\n' end
local answer = {1}
for i = 9, #ARGV, 5 do
  local id, name, ts, user = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3]
  if redis.call('SET', ARGV[1] .. id, owner .. ARGV[i + 4], 'NX', 'PX', ARGV[3]) then
    redis.call('ZADD', KEYS[1], ts, id)
    redis.call('ZADD', ARGV[2] .. name, ts, id)
    redis.call('ZADD', KEYS[2], ARGV[4], string.len(id) .. ':' .. id .. name)
    if user ~= '' then
      redis.call('ZADD', ARGV[8] .. user, ts, id)
      redis.call('ZADD', KEYS[4], ARGV[4], string.len(id) .. ':' .. id .. user)
    end
    answer[#answer + 1] = 1
  else
    redis.call('SADD', ARGV[5] .. id, ARGV[7])
    redis.call('PEXPIRE', ARGV[5] .. id, ARGV[6])
    answer[#answer + 1] = 0
  end
end
return answer
"#,
    )
});

/// Takes back an ingest request (see `EventStore::undo_append`): first fences it (its
/// "undone" key, so that its append, arriving late, stores nothing), then for each of its
/// events: its own mark is dropped from the event's found-again set; the event is removed
/// when nobody else holds it — stored by this request (`#REQUEST\n` + its JSON) and found by
/// no other request since, or stored by a request taken back before and now found by no
/// request but that one. KEYS: the by-`ts` zset, the request's "undone" key. ARGV: the event
/// key prefix, the by-name key prefix, the found-again key prefix, the fence's TTL (ms), the
/// request's id, the "undone" key prefix, the by-user key prefix, then per event its id, name,
/// user key (`''`: none) and JSON. Answers how many events it removed. (Its acceptance
/// entries are left to the trim, which finds the event key gone.)
pub(crate) static UNDO_APPEND: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
redis.call('SET', KEYS[2], '1', 'PX', ARGV[4])
local function held_by_another(id, owner)
  for _, batch in ipairs(redis.call('SMEMBERS', ARGV[3] .. id)) do
    if batch ~= owner then return true end
  end
  return false
end
local removed = 0
for i = 8, #ARGV, 4 do
  local id, name, user = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  local again = ARGV[3] .. id
  redis.call('SREM', again, ARGV[5])
  local stored = redis.call('GET', ARGV[1] .. id)
  local gone = false
  if stored == '#' .. ARGV[5] .. '\n' .. ARGV[i + 3] then
    gone = not held_by_another(id, ARGV[5])
  elseif stored and string.sub(stored, 1, 1) == '#' then
    local nl = string.find(stored, '\n', 1, true)
    if nl then
      local owner = string.sub(stored, 2, nl - 1)
      gone = redis.call('EXISTS', ARGV[6] .. owner) == 1 and not held_by_another(id, owner)
    end
  end
  if gone then
    redis.call('DEL', ARGV[1] .. id, again)
    redis.call('ZREM', KEYS[1], id)
    redis.call('ZREM', ARGV[2] .. name, id)
    if user ~= '' then redis.call('ZREM', ARGV[7] .. user, id) end
    removed = removed + 1
  end
end
return removed
"#,
    )
});

/// Drops the index entries of events accepted before the retention's horizon (their keys have
/// expired): from the by-`ts` index, the by-name index and the acceptance index; then, with
/// what is left of the budget, from the by-user indexes and the user acceptance index. KEYS:
/// the acceptance zset, the by-`ts` zset, the user acceptance zset. ARGV: horizon (ms,
/// exclusive), the by-name key prefix, the most acceptance entries to drop in all, the event key
/// prefix, the by-user key prefix. Acceptance members are `LEN:IDNAME` (`LEN:IDUSER`), so the
/// name's (user's) index and event keys are built here (the event indexes are not in one
/// Cluster slot anyway). An id whose event key exists again (sent again after it expired,
/// under another name) keeps its index entries. Answers how many acceptance entries it
/// dropped.
pub(crate) static TRIM_EVENTS: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local function trim(accepted, index_prefix, drop_from_time, most)
  if most <= 0 then return 0 end
  local expired = redis.call('ZRANGEBYSCORE', accepted, '-inf', '(' .. ARGV[1], 'LIMIT', 0, most)
  for _, m in ipairs(expired) do
    local colon = string.find(m, ':', 1, true)
    local n = tonumber(string.sub(m, 1, colon - 1))
    local id = string.sub(m, colon + 1, colon + n)
    if redis.call('EXISTS', ARGV[4] .. id) == 0 then
      if drop_from_time then redis.call('ZREM', KEYS[2], id) end
      redis.call('ZREM', index_prefix .. string.sub(m, colon + n + 1), id)
    end
  end
  -- The entries read are the lowest ranks.
  if #expired > 0 then redis.call('ZREMRANGEBYRANK', accepted, 0, #expired - 1) end
  return #expired
end
local most = tonumber(ARGV[3])
local dropped = trim(KEYS[1], ARGV[2], true, most)
return dropped + trim(KEYS[3], ARGV[5], false, most - dropped)
"#,
    )
});

/// Lua shared by the job scripts. A job is `LEN:ID` `LEN:QUEUE` `RESERVE_MS:` then the
/// payload (lengths in bytes, so any bytes survive); a timed job (a reservation, an entry of a
/// set) is `MS:` then a job. Names and ids are only compared and concatenated, never used as
/// Lua patterns. A queue's key is built here from the queue key prefix and the job's queue (it
/// shares the `{jobs}` hash tag, so the slot is the declared keys').
macro_rules! jobs_lua {
    () => {
        r#"
local function field(s, from)
  local colon = string.find(s, ':', from, true)
  local n = tonumber(string.sub(s, from, colon - 1))
  return string.sub(s, colon + 1, colon + n), colon + n + 1
end
local function parse(job)
  local id, at = field(job, 1)
  local queue, rest = field(job, at)
  local colon = string.find(job, ':', rest, true)
  return id, queue, string.sub(job, rest, colon - 1), colon + 1
end
local function with_payload(job, payload)
  local _, _, _, at = parse(job)
  return string.sub(job, 1, at - 1) .. payload
end
local function untimed(rec)
  return string.sub(rec, string.find(rec, ':', 1, true) + 1)
end
local function to_queue(prefix, known, job)
  local _, queue = parse(job)
  redis.call('RPUSH', prefix .. queue, job)
  redis.call('SADD', known, queue)
end
local function to_set(zset, data, id, at, job)
  redis.call('ZADD', zset, at, id)
  redis.call('HSET', data, id, at .. ':' .. job)
end
local function mget(key, ids)
  local out = {}
  for i = 1, #ids, 1000 do
    local vals = redis.call('HMGET', key, unpack(ids, i, math.min(i + 999, #ids)))
    for j = 1, #vals do out[#out + 1] = vals[j] end
  end
  return out
end
"#
    };
}

/// Takes the first job of the first listed queue that has one and is not paused, and reserves
/// it: the reservation is `NOW:` then the job (the client adds the job's `reserve_ms` to
/// `NOW` exactly; a Lua number is a double), its expiry score `NOW + reserve_ms`. KEYS: paused
/// set, reserved hash, expiring zset, then the queues' lists. ARGV: now, then the queues' names
/// (in the order of their keys). Answers the job, or nil.
pub(crate) static JOBS_RESERVE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(concat!(
        jobs_lua!(),
        r#"
for i = 4, #KEYS do
  if redis.call('SISMEMBER', KEYS[1], ARGV[i - 2]) == 0 then
    -- Read and parsed before any write: a record that does not parse stops the script
    -- with nothing changed (Redis does not roll a script back).
    local job = redis.call('LINDEX', KEYS[i], 0)
    if job then
      local id, _, reserve_ms = parse(job)
      local score = string.format('%.17g', tonumber(ARGV[1]) + tonumber(reserve_ms))
      redis.call('LPOP', KEYS[i])
      redis.call('HSET', KEYS[2], id, ARGV[1] .. ':' .. job)
      redis.call('ZADD', KEYS[3], score, id)
      return job
    end
  end
end
return false
"#
    ))
});

/// Ends a reservation and places its job. KEYS: reserved hash, expiring zset, known queues set,
/// then (mode `set`) the set's zset and data hash. ARGV: id, mode (`queue`, `set`, `gone`),
/// payload, time (mode `set`), queue key prefix. Answers 1, or 0 when `id` is not reserved.
pub(crate) static JOBS_SETTLE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(concat!(
        jobs_lua!(),
        r#"
local rec = redis.call('HGET', KEYS[1], ARGV[1])
if not rec then return 0 end
-- Parsed before any write (see JOBS_RESERVE).
local job = nil
if ARGV[2] ~= 'gone' then job = with_payload(untimed(rec), ARGV[3]) end
redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('ZREM', KEYS[2], ARGV[1])
if ARGV[2] == 'gone' then return 1 end
if ARGV[2] == 'queue' then
  to_queue(ARGV[5], KEYS[3], job)
else
  to_set(KEYS[4], KEYS[5], ARGV[1], ARGV[4], job)
end
return 1
"#
    ))
});

/// The reservations that ran out, earliest first. KEYS: expiring zset, reserved hash. ARGV:
/// now, the most to answer. Answers the reservations (`RESERVED_AT:` then the job).
pub(crate) static JOBS_EXPIRED: LazyLock<Script> = LazyLock::new(|| {
    Script::new(concat!(
        jobs_lua!(),
        r#"
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, ARGV[2])
local recs = mget(KEYS[2], ids)
local out = {}
for i = 1, #ids do
  if recs[i] then
    out[#out + 1] = recs[i]
  else
    -- An expiry whose reservation is gone would hide the ones behind it.
    redis.call('ZREM', KEYS[1], ids[i])
  end
end
return out
"#
    ))
});

/// Moves the due jobs of a set: to the end of their queues (mode `queue`) or nowhere (mode
/// `delete`). KEYS: the set's zset and data hash, known queues set. ARGV: now, the most to
/// move, mode, queue key prefix. Answers how many moved.
pub(crate) static JOBS_PROMOTE_DUE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(concat!(
        jobs_lua!(),
        r#"
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, ARGV[2])
if #ids == 0 then return 0 end
local recs = mget(KEYS[2], ids)
-- Each job is parsed before it is moved: one that does not parse stays where it is, and
-- the others move (Redis does not roll a script back).
local moved = 0
for i = 1, #ids do
  local rec = recs[i]
  local ok, job = true, nil
  if rec then
    job = untimed(rec)
    if ARGV[3] == 'queue' then ok = pcall(parse, job) end
  end
  if ok then
    redis.call('ZREM', KEYS[1], ids[i])
    if rec then
      redis.call('HDEL', KEYS[2], ids[i])
      moved = moved + 1
      if ARGV[3] == 'queue' then to_queue(ARGV[4], KEYS[3], job) end
    end
  end
end
return moved
"#
    ))
});

/// The jobs of a set, earliest first. KEYS: the set's zset and data hash. ARGV: first and last
/// rank. Answers the entries (`TIME:` then the job).
pub(crate) static JOBS_SET_JOBS: LazyLock<Script> = LazyLock::new(|| {
    Script::new(concat!(
        jobs_lua!(),
        r#"
local ids = redis.call('ZRANGE', KEYS[1], ARGV[1], ARGV[2])
local recs = mget(KEYS[2], ids)
local out = {}
for i = 1, #recs do
  if recs[i] then out[#out + 1] = recs[i] end
end
return out
"#
    ))
});

/// Moves jobs of a set by id; ids not in the set are skipped. KEYS: the set's zset and data
/// hash, known queues set, then (mode `set`) the target set's zset and data hash. ARGV: mode
/// (`queue`, `set`, `delete`), time (mode `set`), queue key prefix, then the ids. Answers how
/// many moved.
pub(crate) static JOBS_MOVE_FROM_SET: LazyLock<Script> = LazyLock::new(|| {
    Script::new(concat!(
        jobs_lua!(),
        r#"
local moved = 0
for i = 4, #ARGV do
  local id = ARGV[i]
  local rec = redis.call('HGET', KEYS[2], id)
  -- A job going to its queue is parsed first: one that does not parse stays in the set.
  if rec and (ARGV[1] ~= 'queue' or pcall(parse, untimed(rec))) then
    redis.call('HDEL', KEYS[2], id)
    redis.call('ZREM', KEYS[1], id)
    moved = moved + 1
    if ARGV[1] == 'queue' then
      to_queue(ARGV[3], KEYS[3], untimed(rec))
    elseif ARGV[1] == 'set' then
      to_set(KEYS[4], KEYS[5], id, ARGV[2], untimed(rec))
    end
  end
end
return moved
"#
    ))
});

/// Counts jobs by place, in one snapshot. KEYS: known queues set, paused set, reserved hash,
/// totals hash, then the sets' zsets. ARGV: queue key prefix. Answers `{known queue names,
/// their lengths, paused names, reserved, {set sizes}, processed, failures}`.
pub(crate) static JOBS_COUNTS: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local names = redis.call('SMEMBERS', KEYS[1])
local lens = {}
for i = 1, #names do lens[i] = redis.call('LLEN', ARGV[1] .. names[i]) end
local sizes = {}
for i = 5, #KEYS do sizes[#sizes + 1] = redis.call('ZCARD', KEYS[i]) end
local totals = redis.call('HMGET', KEYS[4], 'processed', 'failures')
return {names, lens, redis.call('SMEMBERS', KEYS[2]), redis.call('HLEN', KEYS[3]), sizes,
  totals[1] or '0', totals[2] or '0'}
"#,
    )
});

/// Deletes every job key of the store, and nothing else. KEYS: known queues set first, then
/// the store's other job keys. ARGV: queue key prefix. Answers how many queues it deleted.
pub(crate) static JOBS_FLUSH: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local names = redis.call('SMEMBERS', KEYS[1])
for i = 1, #names do redis.call('UNLINK', ARGV[1] .. names[i]) end
redis.call('UNLINK', unpack(KEYS))
return #names
"#,
    )
});

/// Lua shared by the pause scripts: `read_pause(key)` answers a pause's fields of the run hash
/// `KEYS[1]` as `{json, status, resolved_at or '', matched event per spec or ''…}` (`{}` for no
/// such pause). A pause is `pz:K` (its JSON as registered), `pk:K` (`specs,all,trigger id`, what
/// the scripts need), `ps:K` (status), `pr:K` (when it ended) and `pm:K:I` (the event that
/// matched spec I, as JSON: kept verbatim, never decoded by Lua).
macro_rules! read_pause_lua {
    () => {
        r#"
local function read_pause(k)
  local cur = redis.call('HMGET', KEYS[1], 'pz:' .. k, 'ps:' .. k, 'pr:' .. k, 'pk:' .. k)
  if not cur[1] then return {} end
  local n = tonumber(string.match(cur[4], '^(%d+),'))
  local out = {cur[1], cur[2], cur[3] or ''}
  for i = 0, n - 1 do out[#out + 1] = redis.call('HGET', KEYS[1], 'pm:' .. k .. ':' .. i) or '' end
  return out
end
"#
    };
}

/// Records an event as the match of one spec of a waiting pause of a running run (once per
/// spec, one spec per event; never the run's own trigger), resolving the pause (`matched`,
/// with its timeline entry) when that was its last open spec or it is not `all`. ARGV: key,
/// spec, event id, event JSON, now, entry. Answers `{applied, read_pause(key), run status}`.
pub(crate) static RESUME_PAUSE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(concat!(
        read_pause_lua!(),
        r#"
local k = ARGV[1]
local cur = redis.call('HMGET', KEYS[1], 'pk:' .. k, 'ps:' .. k, 'status')
if not cur[1] then return {0, {}, cur[3] or ''} end
local applied = 0
if cur[2] == 'waiting' and cur[3] == 'running' then
  local n, all, trigger = string.match(cur[1], '^(%d+),(%d),(.*)$')
  n = tonumber(n)
  local spec = tonumber(ARGV[2])
  local fresh = spec < n and ARGV[3] ~= trigger
  for i = 0, n - 1 do
    if fresh and redis.call('HGET', KEYS[1], 'pi:' .. k .. ':' .. i) == ARGV[3] then fresh = false end
  end
  if fresh and redis.call('HSETNX', KEYS[1], 'pm:' .. k .. ':' .. spec, ARGV[4]) == 1 then
    redis.call('HSET', KEYS[1], 'pi:' .. k .. ':' .. spec, ARGV[3])
    applied = 1
    local done = true
    if all == '1' then
      for i = 0, n - 1 do
        if redis.call('HEXISTS', KEYS[1], 'pm:' .. k .. ':' .. i) == 0 then done = false; break end
      end
    end
    if done then
      redis.call('HSET', KEYS[1], 'ps:' .. k, 'matched', 'pr:' .. k, ARGV[5])
      redis.call('RPUSH', KEYS[2], ARGV[6])
      if string.sub(k, 1, 1) ~= '!' then redis.call('HINCRBY', KEYS[1], 'waits', -1) end
    end
  end
end
return {applied, read_pause(k), cur[3]}
"#
    ))
});

/// Ends a waiting pause of a running run with a status (`timed_out`, `cancelled`). ARGV: key,
/// now, entry, status. Answers `{applied, read_pause(key), run status}`.
pub(crate) static END_PAUSE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(concat!(
        read_pause_lua!(),
        r#"
local k = ARGV[1]
local cur = redis.call('HMGET', KEYS[1], 'ps:' .. k, 'status')
local st = cur[1]
if not st then return {0, {}, cur[2] or ''} end
local applied = 0
if st == 'waiting' and cur[2] == 'running' then
  redis.call('HSET', KEYS[1], 'ps:' .. k, ARGV[4], 'pr:' .. k, ARGV[2])
  redis.call('RPUSH', KEYS[2], ARGV[3])
  if string.sub(k, 1, 1) ~= '!' then redis.call('HINCRBY', KEYS[1], 'waits', -1) end
  applied = 1
end
return {applied, read_pause(k), cur[2]}
"#
    ))
});

/// Reads a pause. ARGV: key. Answers `read_pause(key)`.
pub(crate) static GET_PAUSE: LazyLock<Script> =
    LazyLock::new(|| Script::new(concat!(read_pause_lua!(), "return read_pause(ARGV[1])\n")));

/// Cancels a running run: status `cancelled` (ended now), every step not final and every
/// waiting pause `cancelled`, a `run.cancelled` entry. ARGV: now, entry. Answers `{applied,
/// status after, created_at, {pause JSON…}}` (applied -1: no such run).
pub(crate) static CANCEL_RUN: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local st = redis.call('HGET', KEYS[1], 'status')
if not st then return {-1, '', 0, {}} end
local created = tonumber(redis.call('HGET', KEYS[1], 'created_at'))
local all = redis.call('HGETALL', KEYS[1])
local pauses = {}
local set = {'status', 'cancelled', 'ended_at', ARGV[1], 'open', 0, 'waits', 0}
for i = 1, #all, 2 do
  local f, v = all[i], all[i + 1]
  local kind = string.sub(f, 1, 3)
  if kind == 'pz:' then
    pauses[#pauses + 1] = v
  elseif kind == 'st:' and v ~= 'completed' and v ~= 'failed' and v ~= 'skipped' and v ~= 'cancelled' then
    set[#set + 1] = f; set[#set + 1] = 'cancelled'
  elseif kind == 'ps:' and v == 'waiting' then
    set[#set + 1] = f; set[#set + 1] = 'cancelled'
    set[#set + 1] = 'pr:' .. string.sub(f, 4); set[#set + 1] = ARGV[1]
  end
end
if st ~= 'running' then return {0, st, created, pauses} end
-- In slices: `unpack` has a limit on how many values it spreads.
for i = 1, #set, 1000 do
  redis.call('HSET', KEYS[1], unpack(set, i, math.min(i + 999, #set)))
end
redis.call('RPUSH', KEYS[2], ARGV[2])
return {1, 'cancelled', created, pauses}
"#,
    )
});
