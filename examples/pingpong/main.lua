-- Spawns a pong process on another host, plays a few rounds, and returns the count.
local function main()
  local rounds = 3
  local pong = process.spawn_monitored("app:pong", "app:workers")
  local inbox = process.inbox()
  for i = 1, rounds do
    process.send(pong, "ping", { n = i })
    local msg = inbox:receive()
    print(string.format("round %d: %s %d from %s", i, msg:topic(), msg:payload():data().n,
      msg:from() == pong and "pong" or "?"))
  end
  process.send(pong, "stop")
  local ev = process.events():receive()
  print("pong exited: " .. ev.result.value)
  return rounds
end

return { main = main }
