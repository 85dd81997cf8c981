# Tests that are not Catch2 executables.

# A consumer project finds the installed package, or adds the source tree, and instantiates the templates.
foreach(mode find_package add_subdirectory)
  add_test(NAME consumer.${mode}
    COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/consumer/run_consumer.sh ${mode} ${PROJECT_SOURCE_DIR}
            ${PROJECT_BINARY_DIR} ${CMAKE_CURRENT_BINARY_DIR}/consumer_${mode})
  set_tests_properties(consumer.${mode} PROPERTIES TIMEOUT 600 PASS_REGULAR_EXPRESSION "consumer: .* ok")
endforeach()
