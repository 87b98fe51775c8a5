/*
 * The few protobuf wire-format primitives the native code needs to write
 * its events and read the zygote's commands (pyclave.worker.v1), without a
 * protobuf library in the worker. Async-signal-safe: sigsys.c uses them.
 */
#include <string.h>

#include "native.h"

size_t pyclave_put_varint(uint8_t *out, uint64_t value) {
    size_t n = 0;
    while (value >= 0x80) {
        out[n++] = (uint8_t)(value | 0x80);
        value >>= 7;
    }
    out[n++] = (uint8_t)value;
    return n;
}

int pyclave_read_varint(const uint8_t **at, const uint8_t *end, uint64_t *value) {
    uint64_t result = 0;
    for (unsigned shift = 0; shift < 64 && *at < end; shift += 7) {
        uint8_t byte = *(*at)++;
        result |= (uint64_t)(byte & 0x7f) << shift;
        if (byte < 0x80) {
            *value = result;
            return 0;
        }
    }
    return -1;
}

int pyclave_skip_field(const uint8_t **at, const uint8_t *end, uint32_t wire_type) {
    uint64_t length;
    switch (wire_type) {
    case PYCLAVE_WIRE_VARINT:
        return pyclave_read_varint(at, end, &length);
    case PYCLAVE_WIRE_FIXED64:
        length = 8;
        break;
    case PYCLAVE_WIRE_LENGTH_DELIMITED:
        if (pyclave_read_varint(at, end, &length) == -1)
            return -1;
        break;
    case PYCLAVE_WIRE_FIXED32:
        length = 4;
        break;
    default:
        return -1;
    }
    if (length > (uint64_t)(end - *at))
        return -1;
    *at += length;
    return 0;
}

size_t pyclave_put_varint_field(uint8_t *out, uint32_t field, uint64_t value) {
    out[0] = (uint8_t)(field << 3 | PYCLAVE_WIRE_VARINT);
    return 1 + pyclave_put_varint(out + 1, value);
}

size_t pyclave_put_bytes_field(uint8_t *out, uint32_t field, const uint8_t *bytes, size_t length) {
    out[0] = (uint8_t)(field << 3 | PYCLAVE_WIRE_LENGTH_DELIMITED);
    size_t written = 1 + pyclave_put_varint(out + 1, length);
    memcpy(out + written, bytes, length);
    return written + length;
}

void pyclave_put_frame_header(uint8_t *out, uint32_t length) {
    out[0] = (uint8_t)(length >> 24);
    out[1] = (uint8_t)(length >> 16);
    out[2] = (uint8_t)(length >> 8);
    out[3] = (uint8_t)length;
}
