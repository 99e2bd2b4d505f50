# pragma version ~=0.4.3
# pragma evm-version cancun
"""
@title A hostile ERC-20 for tests: its transfer and transferFrom call back into
       a target (reentrancy), or fail, as configured.
"""

balanceOf: public(HashMap[address, uint256])
target: public(address)
payload: public(Bytes[1024])
# 0 honest; 1 reenter and bubble the revert; 2 reenter, keep the error, return false; 3 return false
mode: public(uint256)
last_error: public(bytes32)  # the first 32 bytes of the last reentry's revert string


@external
def mint(to: address, amount: uint256):
    self.balanceOf[to] += amount


@external
def arm(target: address, payload: Bytes[1024], mode: uint256):
    self.target = target
    self.payload = payload
    self.mode = mode


@internal
def _hook() -> bool:
    if self.mode == 3:
        return False
    if self.mode == 1:
        raw_call(self.target, self.payload)
    elif self.mode == 2:
        ok: bool = False
        err: Bytes[100] = b""
        ok, err = raw_call(self.target, self.payload, max_outsize=100, revert_on_failure=False)
        if len(err) == 100:  # Error(string): selector, offset, length, then the text
            self.last_error = extract32(err, 68)
        return ok
    return True


@external
def transfer(to: address, amount: uint256) -> bool:
    if not self._hook():
        return False
    self.balanceOf[msg.sender] -= amount
    self.balanceOf[to] += amount
    return True


@external
def transferFrom(owner: address, to: address, amount: uint256) -> bool:
    if not self._hook():
        return False
    self.balanceOf[owner] -= amount
    self.balanceOf[to] += amount
    return True
