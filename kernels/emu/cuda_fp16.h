// cuda-emu: stands in for the toolkit's <cuda_fp16.h>; everything it provides is in cuda_emu.h.
#pragma once
#include "cuda_emu.h"
