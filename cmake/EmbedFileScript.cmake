# Writes a C++ source holding IN's bytes as a hex array (no raw-string length limits).
file(READ "${IN}" hex HEX)
string(REGEX REPLACE "([0-9a-f][0-9a-f])" "0x\\1," bytes "${hex}")
string(LENGTH "${hex}" hexlen)
math(EXPR len "${hexlen} / 2")
file(WRITE "${OUT}" "#include <string_view>\nnamespace provisioner::embedded {\nstatic const unsigned char data_[] = {${bytes} 0};\nextern const std::string_view ${SYMBOL};\nconst std::string_view ${SYMBOL}(reinterpret_cast<const char*>(data_), ${len});\n}\n")
