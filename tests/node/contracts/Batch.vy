# pragma version ~=0.4.3
# pragma evm-version cancun

@external
def two(target: address, a: Bytes[4000], b: Bytes[4000]):
    raw_call(target, a)
    raw_call(target, b)
