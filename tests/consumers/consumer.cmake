# Shared by the consumer projects, after each has brought alibi in its own way.
# A consumer must get none of our tests, benchmarks or examples.
if(TARGET alibi_tests OR TARGET alibi_bench OR TARGET alibi_quickstart)
  message(FATAL_ERROR "alibi leaked its own test, bench or example targets into a consumer")
endif()
add_executable(consumer "${CMAKE_CURRENT_LIST_DIR}/consumer.cpp")
# alibi::native: alibi with this machine's instruction set (the README's one-line opt-in).
target_link_libraries(consumer PRIVATE alibi::native)
target_compile_definitions(consumer PRIVATE ALIBI_CONSUMER_NATIVE)
