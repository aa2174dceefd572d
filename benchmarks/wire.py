"""Names on the wire, shared by every contestant without importing PacketFlow."""

PRINCIPAL = "bench"
HELD = ["teller:account/*"]  # what every input's context holds
HIERARCHY = {"teller": ["deposit", "withdraw", "read"]}  # teller implies deposit
REQUIRED_OPERATION = "deposit"  # a Deposit requires deposit:account/<account>

DEPOSIT = "bench.Deposit"
DEPOSIT_ACCEPTED = "bench.DepositAccepted"
BALANCE_CHANGED = "bench.BalanceChanged"
WINDOW_TOTAL = "bench.WindowTotal"
