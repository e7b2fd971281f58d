#ifndef KMATRIX_CLIBVIRT_SHIM_H
#define KMATRIX_CLIBVIRT_SHIM_H

// The libvirt C API as one Clang module; only the Libvirt target imports it.
#include <libvirt/libvirt.h>
#include <libvirt/virterror.h>

#endif
