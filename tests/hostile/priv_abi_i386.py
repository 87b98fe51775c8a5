# expect: killed signal_name=SIGSYS syscall=""
# must-not: make a syscall through the i386 ABI (int 0x80), where the x86-64 rules do not apply; here unshare(CLONE_NEWUSER), i386 number 310
# The filter kills a foreign ABI outright (no SIGSYS handler runs, so no syscall name).
import ctypes
import mmap

CODE = bytes([
    0x53,                          # push rbx
    0xB8, 0x36, 0x01, 0x00, 0x00,  # mov eax, 310 (i386 unshare)
    0xBB, 0x00, 0x00, 0x00, 0x10,  # mov ebx, CLONE_NEWUSER
    0xCD, 0x80,                    # int 0x80
    0x5B,                          # pop rbx
    0xC3,                          # ret
])


def main():
    page = mmap.mmap(-1, mmap.PAGESIZE, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
    page.write(CODE)
    address = ctypes.addressof(ctypes.c_char.from_buffer(page))
    result = ctypes.CFUNCTYPE(ctypes.c_int)(address)()
    return {"int 0x80 returned": result}
