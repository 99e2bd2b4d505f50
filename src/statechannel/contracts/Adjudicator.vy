# pragma version ~=0.4.3
# pragma evm-version cancun
# pragma experimental-codegen
"""
@title statechannel adjudicator
@notice One contract holds many two-party channels. A channel is identified by
        keccak256(chainId, this contract, a, b, challengePeriod, nonce); its
        parameters travel in calldata, and storage keeps one word per channel
        (plus one word per ERC-20 asset it holds).

        A state moves value as a signed net transfer per asset from A to B on top
        of what each participant has funded, so a deposit made at any time is
        credited to its participant and no deposit is ever at the other's mercy.
        Payout for an asset: A gets fundedA - t, B gets fundedB + t.

        Word layout of channels[id]:
          OPEN       bits 0..7 = 1, 8..127 fundedA (ETH), 128..247 fundedB (ETH)
          CLOSING    bits 0..7 = 2, the funded amounts as when OPEN (a close changes only the status)
          CONCLUDED  bits 0..7 = 3 (kept, so the same id can never be reopened)
        While CLOSING, disputes[id] packs the recorded state: bits 0..47 its version, 48..87 finalizesAt,
        88..255 the top 168 bits of its state hash (docs/decisions/0009). A challenge reads the version
        from storage, so it need not quote the record and no one can make it stale by moving the record.
        Payouts always come from the funded amounts in storage, never from calldata: a close can pay a
        channel no more than it holds.
"""

MAX_ASSETS: constant(uint256) = 8
MAX_PERIOD: constant(uint256) = 2**32
MAX_VERSION: constant(uint256) = 2**48
MASK8: constant(uint256) = 2**8 - 1
MASK40: constant(uint256) = 2**40 - 1
MASK48: constant(uint256) = 2**48 - 1
HASH_MASK: constant(uint256) = ~(2**88 - 1)  # the top 168 bits of a state hash
MASK120: constant(uint256) = 2**120 - 1
MASK128: constant(uint256) = 2**128 - 1
HALF_N: constant(uint256) = 57896044618658097711785492504343953926418782139537452191302581570759080747168  # secp256k1 n / 2
PAYOUT_GAS: constant(uint256) = 100000

OPEN: constant(uint256) = 1
CLOSING: constant(uint256) = 2
CONCLUDED: constant(uint256) = 3

DOMAIN_TYPEHASH: constant(bytes32) = keccak256("EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)")
NAME_HASH: constant(bytes32) = keccak256("statechannel")
VERSION_HASH: constant(bytes32) = keccak256("1")
STATE_TYPEHASH: constant(bytes32) = keccak256(
    "State(bytes32 channelId,uint48 version,bool isFinal,address[] assets,int256[] transfers,bytes32 appData)"
)
WITHDRAWAL_TYPEHASH: constant(bytes32) = keccak256(
    "Withdrawal(bytes32 channelId,uint8 participant,address asset,uint256 amount,uint256 nonce,uint256 deadline)"
)

TRANSFER_SELECTOR: constant(Bytes[4]) = method_id("transfer(address,uint256)")
TRANSFER_FROM_SELECTOR: constant(Bytes[4]) = method_id("transferFrom(address,address,uint256)")
BALANCE_OF_SELECTOR: constant(Bytes[4]) = method_id("balanceOf(address)")


struct Params:
    a: address
    b: address
    challenge_period: uint256
    nonce: uint256


struct State:
    version: uint256
    is_final: bool
    assets: DynArray[address, MAX_ASSETS]
    transfers: DynArray[int256, MAX_ASSETS]
    app_data: bytes32


struct Sig:
    r: bytes32
    s: bytes32
    v: uint8


struct Withdrawal:
    participant: uint8
    asset: address
    amount: uint256
    nonce: uint256
    deadline: uint256  # the last block timestamp at which it pays


# A's opening deposit is in the channel word (`channels`), like every funded amount
event Opened:
    channel_id: indexed(bytes32)

# ETH deposits; `funded` is the participant's total after it
event Deposited:
    channel_id: indexed(bytes32)
    participant: uint256
    funded: uint256

event TokenDeposited:
    channel_id: indexed(bytes32)
    token: address
    participant: uint256
    funded: uint256

event Withdrawn:
    channel_id: indexed(bytes32)
    asset: address
    participant: uint256
    amount: uint256
    funded: uint256
    nonce: uint256

event Closed:
    channel_id: indexed(bytes32)
    version: uint256
    finalizes_at: uint256
    state_hash: bytes32

event Challenged:
    channel_id: indexed(bytes32)
    version: uint256
    finalizes_at: uint256
    state_hash: bytes32

event Concluded:
    channel_id: indexed(bytes32)
    version: uint256

event PayoutDeferred:
    account: indexed(address)
    asset: address
    amount: uint256


channels: public(HashMap[bytes32, uint256])
# while CLOSING: version | finalizesAt | top of the state hash of the recorded state (see _commitment); zero otherwise
disputes: public(HashMap[bytes32, bytes32])
# per channel, per ERC-20: fundedA in the low 128 bits, fundedB in the high 128 bits
token_funds: public(HashMap[bytes32, HashMap[address, uint256]])
# payouts whose transfer failed, claimable by the account
claimable: public(HashMap[address, HashMap[address, uint256]])
used_withdrawals: public(HashMap[bytes32, bool])

_locked: transient(bool)

DEPLOY_CHAIN_ID: immutable(uint256)
DEPLOY_DOMAIN: immutable(bytes32)


@deploy
def __init__():
    DEPLOY_CHAIN_ID = chain.id
    DEPLOY_DOMAIN = keccak256(abi_encode(DOMAIN_TYPEHASH, NAME_HASH, VERSION_HASH, chain.id, self))


# ---------------------------------------------------------------- helpers

@internal
def _lock():
    assert not self._locked, "reentrant call"
    self._locked = True


@internal
def _unlock():
    self._locked = False


@internal
@view
def _channel_id(p: Params) -> bytes32:
    assert p.a != empty(address) and p.b != empty(address), "zero participant"
    assert p.a != p.b, "participants are equal"
    assert p.challenge_period > 0 and p.challenge_period < MAX_PERIOD, "bad challenge period"
    return keccak256(abi_encode(chain.id, self, p.a, p.b, p.challenge_period, p.nonce))


@internal
@pure
def _status_error(word: uint256, status: uint256):
    """Revert with why a channel is not in `status` (called only on the failure path)."""
    assert word & MASK8 != 0, "unknown channel"
    if status == OPEN:
        raise "channel not open"
    if status == CLOSING:
        raise "channel not closing"
    raise "channel not concluded"


@internal
@view
def _digest(struct_hash: bytes32) -> bytes32:
    domain: bytes32 = DEPLOY_DOMAIN
    if chain.id != DEPLOY_CHAIN_ID:  # after a chain split, sign for the chain we are on
        domain = keccak256(abi_encode(DOMAIN_TYPEHASH, NAME_HASH, VERSION_HASH, chain.id, self))
    return keccak256(concat(x"1901", domain, struct_hash))


@internal
@pure
def _state_hash(channel_id: bytes32, s: State) -> bytes32:
    assert len(s.assets) == len(s.transfers), "assets and transfers differ in length"
    assert s.version < MAX_VERSION, "version too large"
    n: uint256 = len(s.assets)
    assets_hash: bytes32 = keccak256(slice(abi_encode(s.assets), 64, 32 * n))
    transfers_hash: bytes32 = keccak256(slice(abi_encode(s.transfers), 64, 32 * n))
    return keccak256(abi_encode(STATE_TYPEHASH, channel_id, s.version, s.is_final, assets_hash, transfers_hash, s.app_data))


@internal
@pure
def _signer(digest: bytes32, sig: Sig) -> address:
    assert convert(sig.s, uint256) <= HALF_N, "signature s is not low"
    assert sig.v == 27 or sig.v == 28, "signature v is not 27 or 28"
    return ecrecover(digest, convert(sig.v, uint256), sig.r, sig.s)


@internal
@pure
def _check_sigs(digest: bytes32, p: Params, sig_a: Sig, sig_b: Sig):
    assert self._signer(digest, sig_a) == p.a, "bad signature from A"
    assert self._signer(digest, sig_b) == p.b, "bad signature from B"


@internal
@pure
def _split(funded_a: uint256, funded_b: uint256, t: int256) -> (uint256, uint256):
    if t >= 0:
        moved: uint256 = convert(t, uint256)
        assert moved <= funded_a, "transfer exceeds funds of A"
        return funded_a - moved, funded_b + moved
    back: uint256 = convert(-t, uint256)
    assert back <= funded_b, "transfer exceeds funds of B"
    return funded_a + back, funded_b - back


@internal
@pure
def _commitment(state_hash: bytes32, version: uint256, finalizes_at: uint256) -> bytes32:
    """The whole word kept while CLOSING: the version (< 2**48, checked by _state_hash) and the window's
    end (< 2**40, checked by close) in clear, the top 168 bits of the state hash above them. No funded
    amount in it: they never leave storage, so a truncated hash can only mislead a close into paying a
    channel's own funds (docs/decisions/0009)."""
    return convert((convert(state_hash, uint256) & HASH_MASK) | (finalizes_at << 48) | version, bytes32)


@internal
@view
def _check_assets(channel_id: bytes32, s: State, funded_a: uint256, funded_b: uint256):
    """Assets strictly ascending (so each appears once) and no transfer overdraws."""
    prev: uint256 = 0
    for i: uint256 in range(len(s.assets), bound=MAX_ASSETS):
        key: uint256 = convert(s.assets[i], uint256)
        assert i == 0 or key > prev, "assets not strictly ascending"
        prev = key
        fa: uint256 = funded_a
        fb: uint256 = funded_b
        if key != 0:
            word: uint256 = self.token_funds[channel_id][s.assets[i]]
            fa = word & MASK128
            fb = word >> 128
        self._split(fa, fb, s.transfers[i])


@internal
def _pay(to: address, asset: address, amount: uint256):
    """Pay out; a recipient that cannot receive is credited, never blocks the other."""
    if amount == 0:
        return
    ok: bool = False
    if asset == empty(address):
        ok = raw_call(to, b"", value=amount, gas=PAYOUT_GAS, revert_on_failure=False)
    else:
        res: Bytes[32] = b""
        ok, res = raw_call(
            asset,
            abi_encode(to, amount, method_id=TRANSFER_SELECTOR),
            max_outsize=32,
            gas=PAYOUT_GAS,
            revert_on_failure=False,
        )
        if ok and len(res) > 0:
            ok = convert(res, bool)
    if not ok:
        self.claimable[to][asset] += amount
        log PayoutDeferred(account=to, asset=asset, amount=amount)


@internal
def _conclude(channel_id: bytes32, p: Params, s: State, funded_a: uint256, funded_b: uint256):
    """Pay out every asset. Checks as it goes: assets strictly ascending, no overdraw."""
    self.channels[channel_id] = CONCLUDED
    eth_t: int256 = 0
    prev: uint256 = 0
    for i: uint256 in range(len(s.assets), bound=MAX_ASSETS):
        asset: address = s.assets[i]
        key: uint256 = convert(asset, uint256)
        assert i == 0 or key > prev, "assets not strictly ascending"
        prev = key
        if key == 0:
            eth_t = s.transfers[i]
            continue
        word: uint256 = self.token_funds[channel_id][asset]
        self.token_funds[channel_id][asset] = 0
        ta: uint256 = 0
        tb: uint256 = 0
        ta, tb = self._split(word & MASK128, word >> 128, s.transfers[i])
        self._pay(p.a, asset, ta)
        self._pay(p.b, asset, tb)
    pa: uint256 = 0
    pb: uint256 = 0
    pa, pb = self._split(funded_a, funded_b, eth_t)
    self._pay(p.a, empty(address), pa)
    self._pay(p.b, empty(address), pb)
    log Concluded(channel_id=channel_id, version=s.version)


@internal
@view
def _erc20_balance(token: address) -> uint256:
    res: Bytes[32] = raw_call(
        token, abi_encode(self, method_id=BALANCE_OF_SELECTOR), max_outsize=32, is_static_call=True
    )
    assert len(res) == 32, "token balanceOf failed"
    return convert(res, uint256)


# ---------------------------------------------------------------- lifecycle

@external
@payable
def open(a: address, b: address, challenge_period: uint256, nonce: uint256):
    """Open a channel; msg.value is A's first deposit (both already hold the pre-fund state).

    Takes the fields of Params as separate arguments: the same calldata, cheaper to read."""
    assert a != empty(address) and b != empty(address), "zero participant"
    assert a != b, "participants are equal"
    assert unsafe_sub(challenge_period, 1) < MAX_PERIOD - 1, "bad challenge period"
    channel_id: bytes32 = keccak256(abi_encode(chain.id, self, a, b, challenge_period, nonce))
    assert self.channels[channel_id] == 0, "channel exists"
    assert msg.value <= MASK120, "deposit too large"
    self.channels[channel_id] = OPEN | (msg.value << 8)
    log Opened(channel_id=channel_id)


@external
@payable
def deposit(channel_id: bytes32, participant: uint256):
    """Add ETH to participant 0 (A) or 1 (B) of an open channel. Anyone may pay in."""
    word: uint256 = self.channels[channel_id]
    if word & MASK8 != OPEN:
        assert word != 0, "unknown channel"
        raise "channel not open"
    assert participant < 2, "participant must be 0 or 1"
    assert msg.value > 0, "zero deposit"
    offset: uint256 = 8 + 120 * participant
    funded: uint256 = ((word >> offset) & MASK120) + msg.value
    assert funded <= MASK120, "deposit too large"  # never on Ethereum; a chain with a bigger supply
    self.channels[channel_id] = word + (msg.value << offset)
    log Deposited(channel_id=channel_id, participant=participant, funded=funded)


@internal
def _pull_token(channel_id: bytes32, participant: uint256, token: address, amount: uint256):
    """Take `amount` of `token` from the sender and credit what actually arrived."""
    assert participant < 2, "participant must be 0 or 1"
    assert amount > 0, "zero deposit"
    assert token.is_contract, "token is not a contract"
    before: uint256 = self._erc20_balance(token)
    res: Bytes[32] = raw_call(
        token, abi_encode(msg.sender, self, amount, method_id=TRANSFER_FROM_SELECTOR), max_outsize=32
    )
    assert len(res) == 0 or convert(res, bool), "token transferFrom returned false"
    received: uint256 = self._erc20_balance(token) - before
    assert received > 0, "no tokens received"
    word: uint256 = self.token_funds[channel_id][token]
    offset: uint256 = 128 * participant
    funded: uint256 = ((word >> offset) & MASK128) + received
    assert funded <= MASK128, "deposit too large"
    self.token_funds[channel_id][token] = (word & ~(MASK128 << offset)) | (funded << offset)
    log TokenDeposited(channel_id=channel_id, token=token, participant=participant, funded=funded)


@external
def open_token(a: address, b: address, challenge_period: uint256, nonce: uint256, token: address, amount: uint256):
    """Open a channel whose first deposit, A's, is an ERC-20 (approved beforehand)."""
    self._lock()
    channel_id: bytes32 = self._channel_id(Params(a=a, b=b, challenge_period=challenge_period, nonce=nonce))
    assert self.channels[channel_id] == 0, "channel exists"
    self.channels[channel_id] = OPEN
    log Opened(channel_id=channel_id)
    self._pull_token(channel_id, 0, token, amount)
    self._unlock()


@external
def deposit_token(channel_id: bytes32, participant: uint256, token: address, amount: uint256):
    """Add an ERC-20 (approved beforehand) to participant 0 (A) or 1 (B) of an open channel."""
    self._lock()
    if self.channels[channel_id] & MASK8 != OPEN:
        self._status_error(self.channels[channel_id], OPEN)
    self._pull_token(channel_id, participant, token, amount)
    self._unlock()


@external
def withdraw(p: Params, w: Withdrawal, sig_a: Sig, sig_b: Sig):
    """Pay part of a participant's funds out of an open channel; each signed withdrawal works once,
    and never after its deadline, so a withdrawal that was not sent in time stops binding anyone."""
    self._lock()
    channel_id: bytes32 = self._channel_id(p)
    word: uint256 = self.channels[channel_id]
    if word & MASK8 != OPEN:
        self._status_error(word, OPEN)
    assert w.participant < 2, "participant must be 0 or 1"
    assert w.amount > 0, "zero withdrawal"
    assert block.timestamp <= w.deadline, "withdrawal expired"
    digest: bytes32 = self._digest(
        keccak256(abi_encode(WITHDRAWAL_TYPEHASH, channel_id, w.participant, w.asset, w.amount, w.nonce, w.deadline))
    )
    assert not self.used_withdrawals[digest], "withdrawal already used"
    self._check_sigs(digest, p, sig_a, sig_b)
    self.used_withdrawals[digest] = True
    funded: uint256 = 0
    if w.asset == empty(address):
        offset: uint256 = 8 + 120 * convert(w.participant, uint256)
        funded = (word >> offset) & MASK120
        assert w.amount <= funded, "withdrawal exceeds funds"
        funded -= w.amount
        self.channels[channel_id] = (word & ~(MASK120 << offset)) | (funded << offset)
    else:
        tword: uint256 = self.token_funds[channel_id][w.asset]
        toffset: uint256 = 128 * convert(w.participant, uint256)
        funded = (tword >> toffset) & MASK128
        assert w.amount <= funded, "withdrawal exceeds funds"
        funded -= w.amount
        self.token_funds[channel_id][w.asset] = (tword & ~(MASK128 << toffset)) | (funded << toffset)
    to: address = p.a
    if w.participant == 1:
        to = p.b
    log Withdrawn(
        channel_id=channel_id,
        asset=w.asset,
        participant=convert(w.participant, uint256),
        amount=w.amount,
        funded=funded,
        nonce=w.nonce,
    )
    self._pay(to, w.asset, w.amount)
    self._unlock()


@external
def close_cooperative(p: Params, s: State, sig_a: Sig, sig_b: Sig):
    """A final state signed by both pays out every asset at once, also during a dispute: both
    parties agreeing need not wait out the window."""
    self._lock()
    channel_id: bytes32 = self._channel_id(p)
    word: uint256 = self.channels[channel_id]
    status: uint256 = word & MASK8
    if status != OPEN:
        if status != CLOSING:
            assert status != 0, "unknown channel"
            raise "channel not open or closing"
        self.disputes[channel_id] = empty(bytes32)
    assert s.is_final, "state is not final"
    self._check_sigs(self._digest(self._state_hash(channel_id, s)), p, sig_a, sig_b)
    self._conclude(channel_id, p, s, (word >> 8) & MASK120, word >> 128)
    self._unlock()


@external
def close(p: Params, s: State, sig_a: Sig, sig_b: Sig):
    """Unilateral close: record a both-signed state and open the challenge window."""
    channel_id: bytes32 = self._channel_id(p)
    word: uint256 = self.channels[channel_id]
    if word & MASK8 != OPEN:
        self._status_error(word, OPEN)
    state_hash: bytes32 = self._state_hash(channel_id, s)
    self._check_sigs(self._digest(state_hash), p, sig_a, sig_b)
    self._check_assets(channel_id, s, (word >> 8) & MASK120, word >> 128)
    finalizes_at: uint256 = block.timestamp + p.challenge_period
    assert finalizes_at <= MASK40, "window end too large"  # never before the year 36000
    self.channels[channel_id] = unsafe_add(word, CLOSING - OPEN)  # status only: funded amounts stay
    self.disputes[channel_id] = self._commitment(state_hash, s.version, finalizes_at)
    log Closed(channel_id=channel_id, version=s.version, finalizes_at=finalizes_at, state_hash=state_hash)


@external
def challenge(p: Params, s: State, sig_a: Sig, sig_b: Sig):
    """Replace the recorded state with a higher version before the window ends (the window keeps its end).

    The recorded version and window end are read from storage, not quoted: a challenge stays good
    whatever lower version someone records ahead of it in the same block (docs/decisions/0009)."""
    channel_id: bytes32 = self._channel_id(p)
    word: uint256 = self.channels[channel_id]
    if word & MASK8 != CLOSING:
        self._status_error(word, CLOSING)
    recorded: uint256 = convert(self.disputes[channel_id], uint256)
    finalizes_at: uint256 = (recorded >> 48) & MASK40
    assert block.timestamp < finalizes_at, "challenge window is over"
    assert s.version > recorded & MASK48, "stale version"
    state_hash: bytes32 = self._state_hash(channel_id, s)
    self._check_sigs(self._digest(state_hash), p, sig_a, sig_b)
    self._check_assets(channel_id, s, (word >> 8) & MASK120, word >> 128)
    self.disputes[channel_id] = self._commitment(state_hash, s.version, finalizes_at)
    log Challenged(channel_id=channel_id, version=s.version, finalizes_at=finalizes_at, state_hash=state_hash)


@external
def settle(p: Params, s: State, finalizes_at: uint256):
    """After the window, pay out by the recorded (highest) state, from the funded amounts in storage.

    `finalizes_at` is the window's end as the Closed event said; the stored commitment proves it."""
    self._lock()
    channel_id: bytes32 = self._channel_id(p)
    word: uint256 = self.channels[channel_id]
    if word & MASK8 != CLOSING:
        self._status_error(word, CLOSING)
    assert self.disputes[channel_id] == self._commitment(self._state_hash(channel_id, s), s.version, finalizes_at), "state is not the recorded state"
    assert block.timestamp >= finalizes_at, "challenge window still open"
    self.disputes[channel_id] = empty(bytes32)
    self._conclude(channel_id, p, s, (word >> 8) & MASK120, word >> 128)
    self._unlock()


@external
def reclaim(p: Params, token: address):
    """Return an ERC-20 that the concluding state did not list: each gets what it funded."""
    self._lock()
    channel_id: bytes32 = self._channel_id(p)
    if self.channels[channel_id] & MASK8 != CONCLUDED:
        self._status_error(self.channels[channel_id], CONCLUDED)
    word: uint256 = self.token_funds[channel_id][token]
    assert word != 0, "nothing to reclaim"
    self.token_funds[channel_id][token] = 0
    self._pay(p.a, token, word & MASK128)
    self._pay(p.b, token, word >> 128)
    self._unlock()


@external
def claim(asset: address):
    """Take a payout that could not be delivered when the channel concluded."""
    self._lock()
    amount: uint256 = self.claimable[msg.sender][asset]
    assert amount > 0, "nothing to claim"
    self.claimable[msg.sender][asset] = 0
    if asset == empty(address):
        raw_call(msg.sender, b"", value=amount)
    else:
        res: Bytes[32] = raw_call(asset, abi_encode(msg.sender, amount, method_id=TRANSFER_SELECTOR), max_outsize=32)
        assert len(res) == 0 or convert(res, bool), "token transfer returned false"
    self._unlock()


@external
@view
def domain_separator() -> bytes32:
    if chain.id != DEPLOY_CHAIN_ID:
        return keccak256(abi_encode(DOMAIN_TYPEHASH, NAME_HASH, VERSION_HASH, chain.id, self))
    return DEPLOY_DOMAIN


@external
@view
def state_digest(channel_id: bytes32, s: State) -> bytes32:
    """The EIP-712 digest both participants sign; exposed so off-chain code can be checked against it."""
    return self._digest(self._state_hash(channel_id, s))
