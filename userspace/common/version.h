// vigil's version, set by CMake from project(VERSION ...).
#pragma once

namespace vigil {
inline constexpr const char* kVigilVersion = VIGIL_VERSION_STRING;
}  // namespace vigil
