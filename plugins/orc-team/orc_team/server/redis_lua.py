"""The Redis store's Lua scripts: every decision the store makes runs in one of them, so it is
atomic across every server process on the Redis (never a read in one round trip and a write in
another).  Redis runs scripts one at a time and replicates (and writes to its AOF) what each
did as one unit.

Every script's first ARGV entry is the same header (:data:`HEADER` fields), read by
:data:`PRELUDE`: the key prefix, this server process's id (fan-out messages carry it), how many
events a project keeps, a fresh stream epoch (used only if a project has none yet), how long an
event id is remembered for dedupe, the highest lock epoch this process has seen, the store's
lock domain, and the prefix of its pub/sub channels (which, unlike keys, all databases of a
Redis share: it names the database).  Keys are built in the scripts from the prefix: the store
is for one Redis (a primary), not Redis Cluster.
"""

from __future__ import annotations

HEADER = 8
"""Fields of the header, sent as one ARGV entry joined by ``|`` (fewer arguments to encode)."""
SHIFT = 1024
"""Fencing tokens are ``epoch * SHIFT + n`` (the scripts' ``SHIFT``)."""
"""ARGV entries every script starts with; a script's own arguments follow."""

PRELUDE = r"""
local H = {}
for part in string.gmatch(ARGV[1], '[^|]+') do H[#H + 1] = part end
local P, ORIGIN, KEPT, NEW_EPOCH, DEDUPE_TTL = H[1], H[2], H[3], H[4], H[5]
local FLOOR, DOMAIN, CHANNELS = tonumber(H[6]), H[7], H[8]
local A = 1

-- The lock epoch: the high part of every fencing token.  Bumped (by BOOT) on every new
-- connection to a Redis whose run_id changed since the last bump (it restarted, or a replica
-- was promoted: every connection made before is gone, so no grant can run there before the
-- bump), to at least the Redis clock in ms since 2026-01-01 and above every epoch before:
-- whatever writes a restart lost, no token given out before can come again.
local function num(x)
  if type(x) == 'number' then return string.format('%.0f', x) end
  return x
end
local SHIFT = 1024
local ORIGIN_MS = 1767225600000
local function bump_epoch(run)
  local epoch = tonumber(redis.call('HGET', P .. 'meta', 'epoch') or '0')
  local t = redis.call('TIME')
  local ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) - ORIGIN_MS
  epoch = math.max(epoch + 1, ms, FLOOR + 1)
  redis.call('HSET', P .. 'meta', 'boot', run, 'epoch', num(epoch))
  redis.call('HSETNX', P .. 'meta', 'domain', DOMAIN)  -- a Redis that lost it all
  return epoch
end
local function lock_epoch()
  local epoch = redis.call('HGET', P .. 'meta', 'epoch')
  if not epoch then return bump_epoch('') end  -- wiped (FLUSHALL) without a restart
  return tonumber(epoch)
end

-- A project's next offset and its kept event: the stream entry's id is the offset, so replay
-- is XRANGE by offset, and a fan-out message goes to every server process in offset order.
local function keep(project, event_id, data_with, task_id)
  local pk = P .. 'proj:' .. project
  local offset = redis.call('HINCRBY', pk, 'last', 1)
  redis.call('SADD', P .. 'projects', project)
  redis.call('HSETNX', pk, 'epoch', NEW_EPOCH)
  local data = data_with(num(offset))
  redis.call('XADD', P .. 'events:' .. project, 'MAXLEN', '~', KEPT, num(offset) .. '-0',
             'd', data, 'i', event_id)
  redis.call('SET', P .. 'ev:' .. event_id, 'P' .. num(offset) .. ' ' .. project, 'EX', DEDUPE_TTL)
  redis.call('PUBLISH', CHANNELS .. 'fanout',
             ORIGIN .. '\n' .. task_id .. '\n' .. project .. '\n' .. num(offset) .. '\n' .. data)
  return offset
end

-- The lock events ARGV carries from index i: a count, then (event id, head, tail) each, the
-- offset going between head and tail.  Returns their offsets, in order.
local function keep_all(project, i, task_id)
  local offsets = {}
  local n = tonumber(ARGV[i])
  for e = 0, n - 1 do
    local head, tail = ARGV[i + 2 + 3 * e], ARGV[i + 3 + 3 * e]
    offsets[#offsets + 1] = keep(project, ARGV[i + 1 + 3 * e],
                                 function(offset) return head .. offset .. tail end, task_id)
  end
  return offsets
end

local LOCK_FIELDS = {'k', 'h', 'token', 'ttl', 'acq', 'beat', 'exp'}
local function read_lock(task_id)
  local f = redis.call('HMGET', P .. 'lock:' .. task_id, unpack(LOCK_FIELDS))
  if not f[1] then return nil end
  return f
end

local function project_of(task_id)
  return redis.call('HGET', P .. 'task:' .. task_id, 'project') or ''
end

local function learn_project(task_id, project)
  redis.call('HSET', P .. 'task:' .. task_id, 'project', project)
  redis.call('SADD', P .. 'ptasks:' .. project, task_id)
end

local function drop_lock(task_id)
  redis.call('DEL', P .. 'lock:' .. task_id)
  redis.call('ZREM', P .. 'locks', task_id)
end

-- One string, its fields NUL-separated (none holds a NUL): a client reads one bulk string
-- much faster than an array of them.
-- '0' when no other process has subscribers for the task (its lock events without a
-- project need not be published), '1' when one may.
local function heard_elsewhere(task_id)
  local key = P .. 'watch:' .. task_id
  local n = redis.call('SCARD', key)
  if n == 0 or (n == 1 and redis.call('SISMEMBER', key, ORIGIN) == 1) then return '0' end
  return '1'
end

local function answer(outcome, lock, project, extra, heard)
  local out = {outcome, project, heard or '1'}
  for j = 1, 7 do out[#out + 1] = lock and lock[j] or '' end
  for _, v in ipairs(extra or {}) do out[#out + 1] = num(v) end
  return table.concat(out, '\0')
end
"""

ACQUIRE = PRELUDE + r"""
-- ARGV after the header: task, now, ttl, expires, steal, holder key, holder json, project
-- wanted, expected decision ('' in the first call), then the announcing events.
local task_id, now, ttl, expires = ARGV[A + 1], tonumber(ARGV[A + 2]), ARGV[A + 3], ARGV[A + 4]
local steal, key, holder = ARGV[A + 5] == '1', ARGV[A + 6], ARGV[A + 7]
local wanted, expected = ARGV[A + 8], ARGV[A + 9]
local cur = read_lock(task_id)
local live = cur and tonumber(cur[7]) > now
local project = project_of(task_id)
local head = redis.call('GET', P .. 'head:' .. task_id) or ''  -- the task's last head
if live and not (steal and cur[1] ~= key) then
  if wanted ~= '' and project == '' then
    learn_project(task_id, wanted)
    project = wanted
  end
  if cur[1] ~= key then return answer('held', cur, project, {'', head}) end
  redis.call('HSET', P .. 'lock:' .. task_id, 'h', holder, 'ttl', ttl, 'beat', ARGV[A + 2],
             'exp', expires)
  redis.call('ZADD', P .. 'locks', expires, task_id)
  cur[2], cur[4], cur[6], cur[7] = holder, ttl, ARGV[A + 2], expires
  return answer('extended', cur, project, {'', head})
end
if project == '' then project = wanted end
local tk = P .. 'task:' .. task_id
local fence = tonumber(redis.call('HGET', tk, 'fence') or '0')
local token = math.max(fence + 1, lock_epoch() * SHIFT + 1)
local outcome = live and 'stolen' or 'acquired'
-- the lease it replaces is part of the decision: one the sweeper removed meanwhile is not
-- announced twice
local decision = outcome .. ':' .. num(token) .. ':' .. (cur and cur[3] or '')
if project ~= '' and expected ~= decision then
  return answer('announce:' .. outcome, cur, project, {token, head})  -- nothing changed yet
end
redis.call('HSET', tk, 'fence', num(token))
if project ~= '' then learn_project(task_id, project) end
redis.call('DEL', P .. 'lock:' .. task_id)
redis.call('HSET', P .. 'lock:' .. task_id, 'k', key, 'h', holder, 'token', num(token), 'ttl', ttl,
           'acq', ARGV[A + 2], 'beat', ARGV[A + 2], 'exp', expires)
redis.call('ZADD', P .. 'locks', expires, task_id)
local extra = {token, head}
if project ~= '' then
  for _, offset in ipairs(keep_all(project, A + 10, task_id)) do extra[#extra + 1] = offset end
end
return answer(outcome, cur, project, extra, heard_elsewhere(task_id))
"""

RELEASE = PRELUDE + r"""
-- ARGV after the header: task, now, holder key ('' for a forced release), the token expected
-- ('' in the first call), the releaser's head ('' for none: the last head stays), then the
-- announcing events.  A release records its head in the same script, so a grant on any
-- process after it reads the new head.
local task_id, now, key, expected = ARGV[A + 1], tonumber(ARGV[A + 2]), ARGV[A + 3], ARGV[A + 4]
local head = ARGV[A + 5]
local cur = read_lock(task_id)
if not cur then return answer('none', nil, '') end
local project = project_of(task_id)
if tonumber(cur[7]) <= now then
  drop_lock(task_id)  -- claimed here: only this caller announces its expiry
  return answer('expired', cur, project, {}, heard_elsewhere(task_id))
end
if key ~= '' and cur[1] ~= key then return answer('other', cur, project) end
local hk = P .. 'head:' .. task_id
local last = head ~= '' and head or (redis.call('GET', hk) or '')
if project ~= '' and expected ~= cur[3] then return answer('announce', cur, project, {last}) end
drop_lock(task_id)
if head ~= '' then redis.call('SET', hk, head) end
local extra = {last}
if project ~= '' then
  for _, offset in ipairs(keep_all(project, A + 6, task_id)) do extra[#extra + 1] = offset end
end
return answer('released', cur, project, extra, heard_elsewhere(task_id))
"""

EXPIRE = PRELUDE + r"""
-- ARGV after the header: now.  Each expired lease is removed by exactly one caller.
local now = ARGV[A + 1]
local out = {}
for _, task_id in ipairs(redis.call('ZRANGEBYSCORE', P .. 'locks', '-inf', now, 'LIMIT', 0, 500)) do
  local cur = read_lock(task_id)
  if cur and tonumber(cur[7]) <= tonumber(now) then
    drop_lock(task_id)
    out[#out + 1] = task_id
    out[#out + 1] = answer('expired', cur, project_of(task_id))
  elseif cur then
    redis.call('ZADD', P .. 'locks', cur[7], task_id)
  else
    redis.call('ZREM', P .. 'locks', task_id)
  end
end
return out
"""

READ_LOCKS = PRELUDE + r"""
-- ARGV after the header: now, then task ids ('' for every live lock).
local now = tonumber(ARGV[A + 1])
local tasks = {}
if ARGV[A + 2] == '' then
  tasks = redis.call('ZRANGEBYSCORE', P .. 'locks', '(' .. ARGV[A + 1], '+inf')
else
  for i = A + 2, #ARGV do tasks[#tasks + 1] = ARGV[i] end
end
local out = {}
for _, task_id in ipairs(tasks) do
  local cur = read_lock(task_id)
  if cur and tonumber(cur[7]) > now then
    out[#out + 1] = task_id
    out[#out + 1] = answer('live', cur, project_of(task_id))
  end
end
return out
"""

KEEP_EVENT = PRELUDE + r"""
-- ARGV after the header: project, task ('' for none), event id, head, tail.
local head, tail = ARGV[A + 4], ARGV[A + 5]
return keep(ARGV[A + 1], ARGV[A + 3], function(offset) return head .. offset .. tail end,
            ARGV[A + 2])
"""

FIND = PRELUDE + r"""
-- Kept events by id: the ids found, each with its project, offset, data and stream epoch.
local function find(event_id)
  local at = redis.call('GET', P .. 'ev:' .. event_id)
  if not at then return nil end
  if string.sub(at, 1, 1) == 'N' then return {event_id, '', '', string.sub(at, 2), ''} end
  local offset, project = string.match(at, '^P(%d+) (.*)$')
  local found = redis.call('XRANGE', P .. 'events:' .. project, offset .. '-0', offset .. '-0')
  if #found == 0 then return nil end  -- trimmed: forgotten, as the SQLite store forgets it
  local epoch = redis.call('HGET', P .. 'proj:' .. project, 'epoch') or ''
  return {event_id, project, offset, found[1][2][2], epoch}
end
"""

FIND_EVENTS = FIND + r"""
local out = {}
for i = A + 1, #ARGV do
  local found = find(ARGV[i])
  if found then out[#out + 1] = found end
end
return out
"""

RECORD_EVENTS = FIND + r"""
-- ARGV after the header: a count, then per event: id, task, project ('' for the task's own),
-- the number of state fields, those fields and values, and the stamped event in three parts
-- (the project goes between the first two, the offset between the last two).  Per event the
-- answer is {kind, project, offset, data, epoch}: 'new', 'duplicate' or 'mismatch'.
local out = {}
local i = A + 2
for _ = 1, tonumber(ARGV[A + 1]) do
  local event_id, task_id, wanted = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  local nstate = tonumber(ARGV[i + 3])
  local state_at = i + 4
  local a, b, c = ARGV[state_at + 2 * nstate], ARGV[state_at + 2 * nstate + 1],
                  ARGV[state_at + 2 * nstate + 2]
  i = state_at + 2 * nstate + 3
  local found = find(event_id)
  if found then
    out[#out + 1] = {'duplicate', found[2], found[3], found[4], found[5]}
  else
    local tk = P .. 'task:' .. task_id
    local known = redis.call('HGET', tk, 'project')
    local project = known or ''
    if project == '' then project = wanted end
    if wanted ~= '' and project ~= wanted then
      out[#out + 1] = {'mismatch', project, '', '', ''}
    else
      if project ~= '' and (known or '') == '' then learn_project(task_id, project) end
      redis.call('HSETNX', tk, 'fence', 0)
      if nstate > 0 then
        local fields = {}
        for s = 0, 2 * nstate - 1 do fields[#fields + 1] = ARGV[state_at + s] end
        redis.call('HSET', P .. 'state:' .. task_id, unpack(fields))
      end
      if project == '' then
        local data = a .. 'null' .. b .. 'null' .. c
        redis.call('SET', P .. 'ev:' .. event_id, 'N' .. data, 'EX', DEDUPE_TTL)
        redis.call('PUBLISH', CHANNELS .. 'fanout',
                   ORIGIN .. '\n' .. task_id .. '\n\n\n' .. data)
        out[#out + 1] = {'new', '', '', data, ''}
      else
        local quoted = '"' .. project .. '"'
        local kept = ''
        local offset = keep(project, event_id, function(offset)
          kept = a .. quoted .. b .. offset .. c
          return kept
        end, task_id)
        out[#out + 1] = {'new', project, num(offset), kept,
                         redis.call('HGET', P .. 'proj:' .. project, 'epoch')}
      end
    end
  end
end
return out
"""

STREAM = PRELUDE + r"""
-- ARGV after the header: project.  {epoch, last offset, oldest kept offset or ''}.
local pk = P .. 'proj:' .. ARGV[A + 1]
redis.call('HSETNX', pk, 'epoch', NEW_EPOCH)
redis.call('SADD', P .. 'projects', ARGV[A + 1])
local meta = redis.call('HMGET', pk, 'epoch', 'last')
local oldest = redis.call('XRANGE', P .. 'events:' .. ARGV[A + 1], '-', '+', 'COUNT', 1)
local first = ''
if #oldest > 0 then first = string.match(oldest[1][1], '^(%d+)') end
return {meta[1], meta[2] or '0', first}
"""

NEXT_OFFSET = PRELUDE + r"""
local pk = P .. 'proj:' .. ARGV[A + 1]
redis.call('HSETNX', pk, 'epoch', NEW_EPOCH)
redis.call('SADD', P .. 'projects', ARGV[A + 1])
return redis.call('HINCRBY', pk, 'last', 1)
"""

PUT_RESOURCE = PRELUDE + r"""
-- ARGV after the header: id, content, expected version, by, at, project ('' keeps the
-- current's), then the announcing event (a count of 0 or 1, id, head, tail).  Compare-and-set:
-- {'made', version, project, offset or ''}, or {'conflict' | 'missing', current version...}.
local rk = P .. 'res:' .. ARGV[A + 1]
local expected = tonumber(ARGV[A + 3])
local current = tonumber(redis.call('HGET', rk, 'latest') or '0')
if current == 0 and expected > 0 then return {'missing'} end
if current ~= expected then
  local v = tostring(current)
  local f = redis.call('HMGET', rk, 'c:' .. v, 'b:' .. v, 't:' .. v, 'p:' .. v)
  return {'conflict', v, f[1], f[2], f[3], f[4]}
end
local project = ARGV[A + 6]
if project == '' and current > 0 then
  project = redis.call('HGET', rk, 'p:' .. tostring(current)) or ''
end
local v = tostring(expected + 1)
redis.call('HSET', rk, 'latest', v, 'c:' .. v, ARGV[A + 2], 'b:' .. v, ARGV[A + 4],
           't:' .. v, ARGV[A + 5], 'p:' .. v, project)
redis.call('SADD', P .. 'resources', ARGV[A + 1])
local offset = ''
if project ~= '' and ARGV[A + 7] == '1' then
  offset = num(keep_all(project, A + 7, '')[1])
end
return {'made', v, project, offset}
"""

LIST_RESOURCES = PRELUDE + r"""
local out = {}
for _, id in ipairs(redis.call('SMEMBERS', P .. 'resources')) do
  local rk = P .. 'res:' .. id
  local v = redis.call('HGET', rk, 'latest')
  if v then
    local f = redis.call('HMGET', rk, 'b:' .. v, 't:' .. v, 'p:' .. v)
    out[#out + 1] = {id, v, f[1], f[2], f[3]}
  end
end
return out
"""

BOOT = PRELUDE + r"""
-- Run on every new connection, before anything else is sent on it.
local run = string.match(redis.call('INFO', 'server'), 'run_id:(%w+)')
if redis.call('HGET', P .. 'meta', 'boot') ~= run then return bump_epoch(run) end
return tonumber(redis.call('HGET', P .. 'meta', 'epoch'))
"""

WATCH = PRELUDE + r"""
-- ARGV after the header: '1' to watch or '0' to stop, then task ids.
for i = A + 2, #ARGV do
  if ARGV[A + 1] == '1' then
    redis.call('SADD', P .. 'watch:' .. ARGV[i], ORIGIN)
    redis.call('SADD', P .. 'watching:' .. ORIGIN, ARGV[i])
  else
    redis.call('SREM', P .. 'watch:' .. ARGV[i], ORIGIN)
    redis.call('SREM', P .. 'watching:' .. ORIGIN, ARGV[i])
  end
end
redis.call('SADD', P .. 'origins', ORIGIN)
"""

FORGET_ORIGIN = PRELUDE + r"""
-- ARGV after the header: a process that is gone.  Its task watches go.
local gone = ARGV[A + 1]
for _, task_id in ipairs(redis.call('SMEMBERS', P .. 'watching:' .. gone)) do
  redis.call('SREM', P .. 'watch:' .. task_id, gone)
end
redis.call('DEL', P .. 'watching:' .. gone)
redis.call('SREM', P .. 'origins', gone)
"""

OPEN = PRELUDE + r"""
-- A store made now (no domain yet): epoch 0 on this Redis, so its tokens count from 1; one
-- made before keeps its domain and epoch.  {domain, epoch}.
if redis.call('HSETNX', P .. 'meta', 'domain', DOMAIN) == 1 then
  local run = string.match(redis.call('INFO', 'server'), 'run_id:(%w+)')
  redis.call('HSET', P .. 'meta', 'epoch', 0, 'boot', run)
end
return redis.call('HMGET', P .. 'meta', 'domain', 'epoch')
"""
