# polyattn_require_package(<Name> <min-version or ""> <debian-package>)
# find_package in CONFIG mode; on failure stop with an error that names the Debian package to install.
macro(polyattn_require_package name version debpkg)
  if("${version}" STREQUAL "")
    find_package(${name} CONFIG QUIET)
  else()
    find_package(${name} ${version} CONFIG QUIET)
  endif()
  if(NOT ${name}_FOUND)
    message(FATAL_ERROR
      "polyattn: required dependency '${name}' ${version} was not found.\n"
      "Install it with:  apt-get install -y ${debpkg}")
  endif()
endmacro()
