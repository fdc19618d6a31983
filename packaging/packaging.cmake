# SPDX-License-Identifier: Apache-2.0
# The DEB and RPM packages (CPack), and the files they ship besides the
# program. Included at the end of the top-level CMakeLists.txt. Built with
#
#   cmake -S . -B build && cmake --build build -j && cpack --config build/CPackConfig.cmake -B build/packages
#
# Everything but the man page is in the install component "system",
# EXCLUDE_FROM_ALL: "cmake --install build" still installs the program
# (and its man page) under CMAKE_INSTALL_PREFIX and nothing in /etc; the
# packages get all of it, under /usr and /etc.

set(SB_PKG_SRC ${CMAKE_CURRENT_LIST_DIR})
set(SB_PKG_BIN ${PROJECT_BINARY_DIR}/packaging)

set(STOWBRIDGE_PACKAGE_MAINTAINER
    "stowbridge maintainers <maintainers@users.noreply.h-seed-ec8c72e1.example>"
    CACHE STRING "Maintainer of the DEB and RPM packages: Name <address>")

# The Debian changelog must name the version being packaged.
file(STRINGS ${SB_PKG_SRC}/changelog SB_PKG_CHANGELOG_TOP LIMIT_COUNT 1)
if(NOT SB_PKG_CHANGELOG_TOP MATCHES "^stowbridge \\(${PROJECT_VERSION}\\) ")
  message(WARNING "packaging/changelog does not start with version "
                  "${PROJECT_VERSION}: add an entry before building packages")
endif()

# Man page and changelog compressed as Debian wants them: gzip -9n (no
# name, no time stamp, so the packages are reproducible).
set(SB_PKG_GZ)
foreach(f stowbridge.1 changelog)
  add_custom_command(OUTPUT ${SB_PKG_BIN}/${f}.gz
    COMMAND ${CMAKE_COMMAND} -E make_directory ${SB_PKG_BIN}
    COMMAND sh -c "gzip -9n -c \"$0\" > \"$1\"" ${SB_PKG_SRC}/${f}
            ${SB_PKG_BIN}/${f}.gz
    DEPENDS ${SB_PKG_SRC}/${f}
    COMMENT "Compressing packaging/${f}"
    VERBATIM)
  list(APPEND SB_PKG_GZ ${SB_PKG_BIN}/${f}.gz)
endforeach()
add_custom_target(sb_packaging_files ALL DEPENDS ${SB_PKG_GZ})

# The RPM %pre creates the user from the same line as the sysusers.d file.
file(STRINGS ${SB_PKG_SRC}/stowbridge.sysusers STOWBRIDGE_SYSUSERS_LINE
     REGEX "^u ")
configure_file(${SB_PKG_SRC}/rpm/pre.sh.in ${SB_PKG_BIN}/rpm-pre.sh @ONLY)

install(FILES ${SB_PKG_BIN}/stowbridge.1.gz
        DESTINATION ${CMAKE_INSTALL_MANDIR}/man1)

# Relative destinations are under the packages' prefix, /usr.
install(FILES ${SB_PKG_SRC}/stowbridge.json
        DESTINATION /etc/stowbridge
        PERMISSIONS OWNER_READ OWNER_WRITE GROUP_READ
        COMPONENT system EXCLUDE_FROM_ALL)
install(FILES ${SB_PKG_SRC}/stowbridge.service
        DESTINATION lib/systemd/system
        COMPONENT system EXCLUDE_FROM_ALL)
install(FILES ${SB_PKG_SRC}/stowbridge.sysusers
        DESTINATION lib/sysusers.d RENAME stowbridge.conf
        COMPONENT system EXCLUDE_FROM_ALL)
install(FILES ${SB_PKG_SRC}/stowbridge.tmpfiles
        DESTINATION lib/tmpfiles.d RENAME stowbridge.conf
        COMPONENT system EXCLUDE_FROM_ALL)
install(FILES ${PROJECT_SOURCE_DIR}/README.md ${SB_PKG_SRC}/copyright
              ${SB_PKG_BIN}/changelog.gz
        DESTINATION share/doc/stowbridge
        COMPONENT system EXCLUDE_FROM_ALL)
install(FILES ${SB_PKG_SRC}/lintian-overrides
        DESTINATION share/lintian/overrides RENAME stowbridge
        COMPONENT system EXCLUDE_FROM_ALL)
install(FILES ${SB_PKG_SRC}/examples/low-port.conf
              ${SB_PKG_SRC}/examples/azure-arc.conf
              ${PROJECT_SOURCE_DIR}/config/stowbridge.sample.json
        DESTINATION share/doc/stowbridge/examples
        COMPONENT system EXCLUDE_FROM_ALL)

set(CPACK_GENERATOR "DEB;RPM")
set(CPACK_PACKAGE_NAME stowbridge)
set(CPACK_PACKAGE_VERSION ${PROJECT_VERSION})
set(CPACK_PACKAGE_VENDOR "the stowbridge project")
set(CPACK_PACKAGE_CONTACT "${STOWBRIDGE_PACKAGE_MAINTAINER}")
set(CPACK_PACKAGE_DESCRIPTION_SUMMARY "DICOM DIMSE to DICOMweb bridge")
set(CPACK_PACKAGE_DESCRIPTION
"stowbridge receives DICOM objects from modalities and PACS over DIMSE
(C-ECHO, C-STORE), writes each one to a crash-safe on-disk spool before
the sender is told success, and delivers them to a DICOMweb server (Azure
Health Data Services, Google Cloud Healthcare, Orthanc, dcm4chee) with
STOW-RS under OAuth2. It answers C-FIND through QIDO-RS. It runs as a
hardened systemd service.")
# Both the program (component Unspecified) and the "system" files.
set(CPACK_INSTALL_CMAKE_PROJECTS
    "${PROJECT_BINARY_DIR};${PROJECT_NAME};ALL;/"
    "${PROJECT_BINARY_DIR};${PROJECT_NAME};system;/")
set(CPACK_PACKAGING_INSTALL_PREFIX /usr)
set(CPACK_STRIP_FILES ON)

set(CPACK_DEBIAN_FILE_NAME DEB-DEFAULT)
set(CPACK_DEBIAN_PACKAGE_MAINTAINER "${STOWBRIDGE_PACKAGE_MAINTAINER}")
set(CPACK_DEBIAN_PACKAGE_SECTION science)
set(CPACK_DEBIAN_PACKAGE_PRIORITY optional)
# dpkg-shlibdeps turns the program's libraries into Depends (libdcmtk17,
# libcurl4, libcjson1, libc6, libstdc++6, libgcc-s1); TLS is OpenSSL's
# through libcurl4, which depends on libssl3. HTTPS with the system's CA
# store needs the CA certificates.
set(CPACK_DEBIAN_PACKAGE_SHLIBDEPS ON)
# adduser: postinst creates the user with it where systemd-sysusers is
# missing (Debian policy 9.2.2).
set(CPACK_DEBIAN_PACKAGE_DEPENDS "adduser, ca-certificates")
set(CPACK_DEBIAN_PACKAGE_SUGGESTS "dcmtk")
set(CPACK_DEBIAN_PACKAGE_CONTROL_EXTRA
    ${SB_PKG_SRC}/deb/postinst ${SB_PKG_SRC}/deb/prerm
    ${SB_PKG_SRC}/deb/postrm ${SB_PKG_SRC}/deb/conffiles)
set(CPACK_DEBIAN_PACKAGE_CONTROL_STRICT_PERMISSION ON)

set(CPACK_RPM_FILE_NAME RPM-DEFAULT)
set(CPACK_RPM_PACKAGE_LICENSE "Apache-2.0")
set(CPACK_RPM_PACKAGE_GROUP "Applications/Engineering")
set(CPACK_RPM_PACKAGE_DESCRIPTION "${CPACK_PACKAGE_DESCRIPTION}")
# Library requirements are generated from the program (libcurl.so.4,
# libdcmnet.so.17, libcjson.so.1, ...).
set(CPACK_RPM_PACKAGE_AUTOREQ ON)
set(CPACK_RPM_PACKAGE_REQUIRES "ca-certificates")
set(CPACK_RPM_PACKAGE_REQUIRES_PRE
    "/usr/sbin/useradd, /usr/sbin/groupadd, /usr/bin/getent")
set(CPACK_RPM_PRE_INSTALL_SCRIPT_FILE ${SB_PKG_BIN}/rpm-pre.sh)
set(CPACK_RPM_POST_INSTALL_SCRIPT_FILE ${SB_PKG_SRC}/rpm/post.sh)
set(CPACK_RPM_PRE_UNINSTALL_SCRIPT_FILE ${SB_PKG_SRC}/rpm/preun.sh)
set(CPACK_RPM_POST_UNINSTALL_SCRIPT_FILE ${SB_PKG_SRC}/rpm/postun.sh)
# Not relocatable: the unit and the configuration name fixed paths.
set(CPACK_PACKAGE_RELOCATABLE OFF)
set(CPACK_RPM_PACKAGE_RELOCATABLE OFF)
set(CPACK_RPM_USER_FILELIST
    "%config(noreplace) %attr(0640,root,stowbridge) /etc/stowbridge/stowbridge.json"
    "%exclude /usr/share/lintian/overrides/stowbridge")
# Directories that belong to the distribution (filesystem, systemd,
# man-db), not to this package.
set(CPACK_RPM_EXCLUDE_FROM_AUTO_FILELIST_ADDITION
    /usr/lib/systemd /usr/lib/systemd/system /usr/lib/sysusers.d
    /usr/lib/tmpfiles.d /usr/share/man /usr/share/man/man1
    /usr/share/lintian /usr/share/lintian/overrides)
# No /usr/lib/.build-id links: they would clash between builds.
set(CPACK_RPM_SPEC_MORE_DEFINE "%define _build_id_links none")

include(CPack)
