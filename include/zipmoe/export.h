// zipmoe/export.h - what libzipmoe exports of the C++ API.
//
// The core is compiled with hidden symbols (-fvisibility=hidden), so that the
// shared library exports its C API (zipmoe.h, marked ZIPMOE_API) and the
// declarations of the public C++ headers (include/zipmoe/*.h), which sit
// between ZIPMOE_PUBLIC_BEGIN and ZIPMOE_PUBLIC_END, and nothing of the
// internal namespaces (zipmoe::codec, zipmoe::format, ...). The C++ API carries
// no ABI promise across versions: build against the headers of the library
// you link (docs/EMBEDDING.md).
#pragma once

#if defined(__GNUC__) || defined(__clang__)
#define ZIPMOE_PUBLIC_BEGIN _Pragma("GCC visibility push(default)")
#define ZIPMOE_PUBLIC_END _Pragma("GCC visibility pop")
#else
#define ZIPMOE_PUBLIC_BEGIN
#define ZIPMOE_PUBLIC_END
#endif
