"""The Lua scripts of the Redis store's claims and fenced writes: each one atomic on the server.

Keys (under the store's prefix): ``claim:{id}`` holds ``"<token>:<owner>"`` and expires with
the lease (Redis's own clock judges leases); ``fence:{id}`` holds the task's current claim
token and outlives the claim (it is kept as long as the task's record: the task TTL after the
last renewal, or forever without a TTL), so a superseded run is refused even after the new
run released its claim. Tokens follow
store.fencing: the previous one plus one, or the caller's wall-clock milliseconds when the
server remembers none. Numbers are formatted with %d: Lua would print large ones as floats.
"""

from __future__ import annotations

# KEYS[1] claim, KEYS[2] cancel, KEYS[3] fence.
# ARGV[1] owner, ARGV[2] lease ms, ARGV[3] token floor (ms), ARGV[4] fence TTL ms ('' none).
# Returns the new token, or 0 while another owner holds a live claim.
CLAIM = """
local holder = redis.call('GET', KEYS[1])
if holder then
  local sep = string.find(holder, ':', 1, true)
  if sep == nil or string.sub(holder, sep + 1) ~= ARGV[1] then
    return 0
  end
end
local previous = redis.call('GET', KEYS[3])
local token
if previous then
  token = tonumber(previous) + 1
else
  token = tonumber(ARGV[3])
end
local text = string.format('%d', token)
if ARGV[4] == '' then
  redis.call('SET', KEYS[3], text)
else
  redis.call('SET', KEYS[3], text, 'PX', ARGV[4])
end
redis.call('SET', KEYS[1], text .. ':' .. ARGV[1], 'PX', ARGV[2])
redis.call('DEL', KEYS[2])
return token
"""

# KEYS[1] claim, KEYS[2] fence. ARGV[1] owner, ARGV[2] token, ARGV[3] lease ms,
# ARGV[4] fence TTL ms ('' none).
# Returns 1 (renewed, or taken again after a lapse) or 0 (superseded).
RENEW = """
local current = redis.call('GET', KEYS[2])
if current and current ~= ARGV[2] then
  return 0
end
if ARGV[4] == '' then
  redis.call('SET', KEYS[2], ARGV[2])
else
  redis.call('SET', KEYS[2], ARGV[2], 'PX', ARGV[4])
end
redis.call('SET', KEYS[1], ARGV[2] .. ':' .. ARGV[1], 'PX', ARGV[3])
return 1
"""

# KEYS[1] claim. ARGV[1] token. The fence key stays: the token remains current.
RELEASE = """
local holder = redis.call('GET', KEYS[1])
local mine = ARGV[1] .. ':'
if holder and string.sub(holder, 1, string.len(mine)) == mine then
  return redis.call('DEL', KEYS[1])
end
return 0
"""

# KEYS[1] task key (also its channel), KEYS[2] fence, KEYS[3] claim. ARGV[1] record JSON,
# ARGV[2] expiry ms ('' for none; <= 0 deletes the record), ARGV[3] token ('' unfenced),
# ARGV[4] '1' for a terminal record: it ends the claim holding the token, as RELEASE does.
# Returns 1 when written (or deleted), 0 when refused; the refusal also returns the
# current token as a second element, for the error message. A write that ended the claim
# returns 1 and 1.
SAVE = """
local ended = 0
if ARGV[3] ~= '' then
  local current = redis.call('GET', KEYS[2])
  if current and current ~= ARGV[3] then
    return {0, current}
  end
  if ARGV[4] == '1' then
    local holder = redis.call('GET', KEYS[3])
    local mine = ARGV[3] .. ':'
    if holder and string.sub(holder, 1, string.len(mine)) == mine then
      ended = redis.call('DEL', KEYS[3])
    end
  end
end
if ARGV[2] == '' then
  redis.call('SET', KEYS[1], ARGV[1])
elseif tonumber(ARGV[2]) <= 0 then
  redis.call('DEL', KEYS[1])
  return {1, ended}
else
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
end
redis.call('PUBLISH', KEYS[1], ARGV[1])
return {1, ended}
"""
