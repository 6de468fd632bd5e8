-- One order, as a durable workflow. Every effect below is journaled: the clock, the two activity
-- calls, the approval signal and the sleep. After a crash the workflow is replayed from its journal
-- on whichever node takes it over: journaled steps give back their recorded results (the card is not
-- charged again) and it carries on from the first step that has no record.
local APPROVAL_WINDOW = 24 * 3600   -- seconds an order waits for approval

local function main(order)
  local placed = time.now()                                          -- step 1: when the order came in
  local charge = funcs.call("app.orders:charge", order.id, order.amount)     -- 2: an activity
  local approval = process.listen("approval"):receive()              -- 3: a signal, journaled on arrival
  -- 4: the clock again. After a crash `placed` comes back from the journal, so this measures the real
  -- wait, downtime included, not the time since the replay began.
  if time.now():sub(placed):seconds() > APPROVAL_WINDOW then
    return { order = order.id, status = "expired", receipt = charge.receipt }
  end
  time.sleep("200ms")                                                -- 5: a durable timer
  local shipment = funcs.call("app.orders:ship", order.id, approval.address)  -- 6: an activity
  return {
    order = order.id,
    status = "shipped",
    charged = charge.amount,
    receipt = charge.receipt,
    approved_by = approval.by,
    tracking = shipment.tracking,
  }
end

return { main = main }
