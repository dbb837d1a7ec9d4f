// The BPF objects of vigil's collectors, as their skeletons embed them: the set a CO-RE BTF
// subset (kernel-compat/core_btf.h) must cover so that any collector can load against it.
#pragma once

#include <vector>

#include "kernel-compat/core_btf.h"

namespace vigil {

std::vector<compat::BpfObjectImage> collectorBpfObjects();

}  // namespace vigil
